def render_invoice(customer, lines, currency="EUR"):
    """Format an invoice as plain text; nothing like this is in the fixture corpus."""
    header = f"Invoice for {customer.name} ({customer.vat_id})"
    rows = [f"{line.description:<40}{line.quantity:>5} x {line.unit_price:>8.2f}" for line in lines]
    total = sum(line.quantity * line.unit_price for line in lines)
    footer = f"Total due: {total:.2f} {currency}"
    return "\n".join([header, "-" * len(header), *rows, footer])


def parse_color(value):
    value = value.strip().lstrip("#")
    if len(value) == 3:
        value = "".join(ch * 2 for ch in value)
    red, green, blue = (int(value[i:i + 2], 16) for i in (0, 2, 4))
    return red, green, blue
