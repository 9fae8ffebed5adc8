"""The shared diffusion core: noise schedules, samplers, the ε-prediction loss, networks, EMA.

Schedules and samplers are plain objects, separate from the networks (the contract of
huggingface diffusers' schedulers): a sampler only ever sees a *denoiser*, a callable
``(x_t, t) -> ε̂`` with ``t`` a (B,) long tensor of timesteps. Conditioning on a code z is a
closure (``lambda x, t: unet(x, t, z)``), so DDPM, DDIM, inversion and two-phase sampling
swap freely and never know which network, or how many, produced ε̂.

* :mod:`bench.diffusion.schedules` — β schedules (linear, cosine, scaled-linear, constant)
  and the precomputed products ᾱ_t etc. as tensors;
* :mod:`bench.diffusion.samplers` — :class:`DDPMSampler`, :class:`DDIMSampler` (with
  inversion), :func:`sample_loop`, :func:`ddim_invert`, :func:`epsilon_loss`;
* :mod:`bench.diffusion.unet` — the UNet denoiser with adaptive group normalisation on
  (t, z), and the semantic encoders built from its blocks;
* :mod:`bench.diffusion.latent_mlp` — DiffAE's latent DDPM network (MLP with skips);
* :mod:`bench.diffusion.ema` — an exponential moving average of a module's weights.
"""
