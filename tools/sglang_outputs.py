"""How SGLang reports prompt ids, shared by the tests and the GPU scripts
(no pytest import: the GPU host has none)."""


def reported_input_ids(meta_info: dict) -> list[int]:
    """Input ids as SGLang reports them with ``return_logprob``."""
    return [token for _, token, _ in meta_info["input_token_logprobs"]]


def as_reported(ids: list[int], vocab_size: int) -> list[int]:
    """What SGLang reports for ``ids``: visual pad values (and, by an upstream
    off-by-one, the last vocabulary id) come back as 0."""
    return [t if 0 <= t < vocab_size - 1 else 0 for t in ids]
