"""The outside baselines of `whence-ls bench attribution-units`: Inseq and Captum's
LLMGradientAttribution, driven on our exact token sequence (split from `attribution_units.py`,
which runs the suite, to keep each under 400 lines). Both are optional: a missing or
incompatible one is recorded as an error and its columns stay empty."""

from __future__ import annotations


class Baselines:
    """Inseq and Captum's LLM attribution, driven on our exact token sequence."""

    def __init__(self, lm, use_inseq: bool, use_captum: bool, ig_steps: int):
        self.lm = lm
        self.ig_steps = ig_steps
        self.inseq_error = None
        self.inseq = {}
        if use_inseq:
            try:
                import inseq

                for method in ("input_x_gradient", "integrated_gradients"):
                    self.inseq[method] = inseq.load_model(lm.model, method, tokenizer=lm.tokenizer)
            except Exception as exc:  # not installed, or incompatible with this torch/transformers
                self.inseq_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.inseq = {}
        self.captum = None
        self.captum_error = None
        if use_captum:
            try:
                from captum.attr import LayerGradientXActivation, LLMGradientAttribution

                layer = LayerGradientXActivation(lm.model, lm.model.get_input_embeddings())
                self.captum = LLMGradientAttribution(layer, lm.tokenizer)
            except Exception as exc:
                self.captum_error = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def inseq_rows(self, method: str, record, last_index: int, *, from_index: int | None = None, strict: bool = True):
        """Position scores (context + generated prefix) for tokens from_index..last_index, or
        None when Inseq tokenises the text differently from our sequence (Inseq takes text,
        not token ids). `strict=False` runs it anyway, for timing a matrix of the same size."""
        import torch

        model = self.inseq[method]
        tokenizer = self.lm.tokenizer
        context_ids = list(record.context.token_ids)
        generated = [t.token_id for t in record.tokens[: last_index + 1]]
        prompt = tokenizer.decode(context_ids, clean_up_tokenization_spaces=False)
        full = tokenizer.decode(context_ids + generated, clean_up_tokenization_spaces=False)
        same = (tokenizer(prompt, add_special_tokens=False)["input_ids"] == context_ids
                and tokenizer(full, add_special_tokens=False)["input_ids"] == context_ids + generated)
        if strict and not same:
            return None
        kwargs = {"n_steps": self.ig_steps, "internal_batch_size": 8} if method == "integrated_gradients" else {}
        if from_index is not None:
            kwargs["attr_pos_start"] = len(context_ids) + from_index
        out = model.attribute(prompt, full, show_progress=False, **kwargs)
        attribution = out.sequence_attributions[0]
        ids = [t.id for t in attribution.target]
        if ids != context_ids + generated:
            return None if strict else {}
        scores = torch.nan_to_num(attribution.target_attributions.float())
        if scores.dim() == 3:
            scores = scores.sum(-1)  # input x gradient: the dot product over embedding dimensions
        first = 0 if from_index is None else from_index
        rows = {}
        for step, index in enumerate(range(first, last_index + 1)):
            rows[index] = scores[: len(context_ids) + index, step]
        return rows

    def captum_rows(self, record, last_index: int):
        from captum.attr import TextTokenInput
        import torch

        context_ids = list(record.context.token_ids)
        prompt = self.lm.tokenizer.decode(context_ids, clean_up_tokenization_spaces=False)
        inp = TextTokenInput(prompt, self.lm.tokenizer)
        if inp.to_tensor().shape[-1] != len(context_ids):
            return None
        target = torch.tensor([t.token_id for t in record.tokens[: last_index + 1]])
        result = self.captum.attribute(inp, target=target)
        matrix = result.token_attr  # [targets, context tokens]
        return {i: torch.cat([matrix[i].float(), torch.zeros(i)]) for i in range(last_index + 1)}
