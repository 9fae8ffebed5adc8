"""Named sampling protocols (torch-free, so bench.toml can be checked without importing torch)."""

from __future__ import annotations


#: named sampling protocols of the FID metric: the adapter's own setting, ancestral DDPM or DDIM with N steps
SAMPLING_PROTOCOL_HELP = "'model', 'ancestral-N' (DDPM ancestral sampling, N steps) or 'ddim-N' (DDIM, eta = 0, N steps)"


def parse_sampling_protocol(name: str) -> tuple[str, int] | None:
    """``"model"`` → None; ``"ancestral-1000"`` → ("ddpm", 1000); ``"ddim-100"`` → ("ddim", 100).

    InfoDiffusion's and DiffAE's FID images come from ``ancestral-1000`` (the reference's
    1000-step DDPM loop); DDIM with fewer steps is the fast choice.
    """
    if name == "model":
        return None
    kind, _, steps = str(name).partition("-")
    if kind in ("ancestral", "ddim") and steps.isdigit() and int(steps) >= 1:
        return ("ddpm" if kind == "ancestral" else "ddim", int(steps))
    raise ValueError(f"unknown sampling protocol {name!r}; expected {SAMPLING_PROTOCOL_HELP}")
