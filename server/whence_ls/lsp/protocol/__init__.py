"""The wire: framing (`wire`), the JSON-RPC envelope and lifecycle checks (`rpc_gate`), the stdio
loop that joins them to pygls (`transport`), LSP params as handlers take them (`params`), and
every method, command and notification name the server and its client share (`names`)."""
