"""Method adapters. One module per method family; one registration line per method here.

Registration lines are lazy (``"module:Class"``), so listing methods imports no torch.
To add a method: write ``methods/<name>.py`` with an :class:`bench.adapter.Adapter`
subclass (``defaults``, ``presets``, ``fit/encode/sample``, ``state_dict``), then add one
``METHODS.register(...)`` line below.
"""

from bench.registry import METHODS

METHODS.register("ae", "methods.vae:AE", "deterministic convolutional autoencoder")
METHODS.register("vae", "methods.vae:VAE", "VAE (Kingma & Welling 2014)")
METHODS.register("beta-vae", "methods.vae:BetaVAE", "beta-VAE (Higgins et al. 2017), beta=4")
METHODS.register("infovae", "methods.vae:InfoVAE", "InfoVAE / MMD-VAE (Zhao et al. 2019)")
METHODS.register("factor-vae", "methods.factorvae:FactorVAE", "FactorVAE (Kim & Mnih 2018): TC by a discriminator, gamma=40")
METHODS.register("beta-tcvae", "methods.dlib_vaes:BetaTCVAE", "beta-TCVAE (Chen et al. 2018): minibatch-weighted TC, beta=6")
METHODS.register("dip-vae-i", "methods.dlib_vaes:DIPVAEI", "DIP-VAE-I (Kumar et al. 2018): covariance of the mean codes")
METHODS.register("dip-vae-ii", "methods.dlib_vaes:DIPVAEII", "DIP-VAE-II (Kumar et al. 2018): covariance of the aggregate posterior")
METHODS.register("annealed-vae", "methods.dlib_vaes:AnnealedVAE", "AnnealedVAE (Burgess et al. 2018): capacity annealed to c_max")
METHODS.register("ddpm", "methods.ddpm:DDPM", "vanilla DDPM (Ho et al. 2020); codes = DDIM-inverted x_T")
METHODS.register("diffae", "methods.diffae:DiffAE", "diffusion autoencoder (Preechakul et al. 2022)")
METHODS.register("infodiffusion", "methods.infodiffusion:InfoDiffusion", "InfoDiffusion (Wang et al. 2023), MMD prior term")
METHODS.register("pdae", "methods.pdae:PDAE", "PDAE (Zhang et al. 2022): encoder + gradient estimator on a frozen DDPM component")
METHODS.register("disdiff", "methods.disdiff:DisDiff", "DisDiff (Yang et al. 2023): N latent units, one gradient field each, on a frozen latent (or pixel) DPM")
METHODS.register("vq-f4", "methods.vqgan:VQF4", "latent diffusion's VQ-f4 first stage (LPIPS + PatchGAN); a component, not generative")
METHODS.register("ldm", "methods.ldm:LDM", "latent DDPM (Rombach et al. 2022) on a VQ-f4 first stage; DisDiff's frozen latent DPM")
METHODS.register("encdiff", "methods.encdiff:EncDiff", "EncDiff (Yang et al. 2024): concept tokens by cross-attention, latent diffusion")
METHODS.register("drl", "methods.drl:DRL", "DRL (Mittal et al.): score model conditioned on E(x_0) (VE SDE), L1 code")
METHODS.register("vdrl", "methods.drl:VDRL", "VDRL (Mittal et al.): DRL with a Gaussian encoder and a KL term")
METHODS.register("simclr", "methods.simclr:SimCLR", "SimCLR (Chen et al. 2020): contrastive, crops + colour jitter; not generative")
METHODS.register("simclr-gauss", "methods.simclr:SimCLRGauss", "SimCLR-Gauss (Mittal et al.): views differ by Gaussian noise only; not generative")
