"""Metrics: one module per metric family, pure functions of arrays plus a random state.

The runner calls every registered metric as ``f(dataset, fn, random_state, **params)``
and expects ``dict[str, float]`` back; each key is a metric name in the results table.
``meta`` on the registration line says what ``fn`` is and what the dataset must offer:

* ``uses``: the adapter method passed as ``fn`` — ``"encode"`` (images (n, C, H, W) in
  [0, 1] → codes (n, D)), ``"encode_t"`` (a :class:`bench.metrics.probe.TimedEncoder`:
  ``fn(x, t=...)`` and ``fn.time_conditioned``, for metrics that sweep a time-conditioned
  code over t), ``"sample"`` (n → images) or ``"reconstruct"`` (images → images);
* ``requires``: the dataset contract needed — ``"factors"`` (a
  :class:`~bench.data.base.FactorDataset`), ``"labels"`` (:class:`~bench.data.base.LabelledDataset`),
  ``"attributes"`` (:class:`~bench.data.base.AttributeDataset`) or ``None`` (any dataset);
* ``outputs``: the keys written into the results table (others returned are dropped);
* ``capability`` (optional): an adapter capability that must be declared, e.g. ``"reconstruct"``;
* ``ranges`` (optional): the valid range of each parameter (:mod:`bench.params`), checked
  with its type (that of the keyword's default) when bench.toml is read, before any training;
* ``version`` (optional, default 1): bump it when a change to the implementation can change
  the metric's values. Rows record it (``metric_version``), and ``bench run`` re-evaluates a
  finished cell's rows of an older version on its saved checkpoint, without retraining, so a
  results table never mixes two implementations of one metric;
* ``scope="seeds"`` (optional): the metric scores the *set* of models of one setting (its
  seeds) together, ``f(dataset, [adapters], random_state, **params)`` returning per-model
  arrays; the runner calls it once the setting's seeds have all run (UDR).

A metric whose requirement is not met is recorded as ``status=skipped`` with the reason.
The pure array functions (``*_from_codes``) live beside the registered wrappers so that
`bench score` can score a representation computed anywhere.
This module only holds registration lines; the implementations are imported lazily.
"""

from bench.diffusion.protocols import parse_sampling_protocol
from bench.registry import METRICS


class MetricUnavailableError(RuntimeError):
    """A metric cannot be computed here (e.g. FID without Inception weights).

    The runner records it as ``status=skipped`` with the message, never as a number.
    """


METRICS.register(
    "factorvae",
    "bench.metrics.factorvae:factor_vae_score",
    "FactorVAE score (Kim & Mnih 2018), disentanglement_lib definition",
    uses="encode",
    requires="factors",
    outputs=("factorvae",),
    ranges={"batch_size": ">= 1", "num_train": ">= 1", "num_eval": ">= 1", "num_variance_estimate": ">= 2", "prune_threshold": "[0, 1)", "encode_batch_size": ">= 1"},
)
METRICS.register(
    "dci",
    "bench.metrics.dci:dci",
    "DCI disentanglement/completeness/informativeness (Eastwood & Williams 2018), GBT importances",
    uses="encode",
    requires="factors",
    outputs=("dci_disentanglement", "dci_completeness", "dci_informativeness"),
    version=2,  # 2: NumPy level-wise GBT (bench.metrics.gbt_exact) replaced sklearn's class as default
    ranges={"num_train": ">= 2", "num_test": ">= 1", "batch_size": ">= 1", "importance": ("gbt", "sklearn_gbt", "hist_gbt")},
)
METRICS.register(
    "tad",
    "bench.metrics.attributes:tad",
    "TAD and number of captured attributes (Yeats et al. 2022, NashAE); variant='infodiffusion' selectable",
    uses="encode",
    requires="attributes",
    outputs=("tad", "tad_attributes", "tad_fold_std"),
    ranges={"variant": ("nashae", "infodiffusion"), "protocol": ("random", "infodiffusion"), "num_samples": ">= 2", "auroc_threshold": "[0, 1]", "entanglement_threshold": "[0, 1]", "encode_batch_size": ">= 1"},
)
METRICS.register(
    "auroc",
    "bench.metrics.attributes:auroc",
    "mean test AUROC of per-attribute logistic regressions on standardised codes, 5-fold (InfoDiffusion)",
    uses="encode",
    requires="attributes",
    outputs=("auroc", "auroc_fold_std"),
    ranges={"protocol": ("random", "infodiffusion"), "num_samples": ">= 2", "n_splits": ">= 2", "max_iter": ">= 1", "encode_batch_size": ">= 1"},
)
METRICS.register(
    "latent_accuracy",
    "bench.metrics.attributes:latent_accuracy",
    "logistic-regression accuracy predicting class labels from codes, 5-fold (InfoDiffusion)",
    uses="encode",
    requires="labels",
    outputs=("latent_accuracy", "latent_accuracy_fold_std"),
    ranges={"protocol": ("random", "infodiffusion"), "num_samples": ">= 2", "n_splits": ">= 2", "max_iter": ">= 1", "encode_batch_size": ">= 1"},
)
METRICS.register(
    "reconstruction",
    "bench.metrics.reconstruction:reconstruction",
    "reconstruction MSE, PSNR and SSIM (Wang et al. 2004 Gaussian window) on images in [0, 1]",
    uses="reconstruct",
    requires=None,
    capability="reconstruct",
    outputs=("mse", "psnr", "ssim"),
    ranges={"num_samples": ">= 1", "batch_size": ">= 1"},
)
METRICS.register(
    "lpips",
    "bench.metrics.lpips:lpips",
    "LPIPS-VGG (v0.1) between images and their reconstructions; skipped without the ImageNet VGG16 weights",
    uses="reconstruct",
    requires=None,
    capability="reconstruct",
    outputs=("lpips",),
    ranges={"num_samples": ">= 1", "batch_size": ">= 1"},
)
METRICS.register(
    "latent_probe",
    "bench.metrics.probe:latent_probe",
    "DRL's downstream probes: 1-hidden-layer MLP and few-shot SVC accuracy, per t for time-conditioned codes",
    uses="encode_t",
    requires="labels",
    version=3,  # 2: the SVCs see standardised codes; 3: a time-conditioned code's t is chosen on a validation split
    ranges={"num_train": ">= 2", "num_test": ">= 1", "num_val": ">= 0", "hidden": ">= 1", "epochs": ">= 1", "few_shot": "each >= 2",
            "t_values": "each >= 0", "encode_batch_size": ">= 1"},
)
METRICS.register(
    "fid",
    "bench.metrics.fid:fid",
    "FID with pytorch-fid's InceptionV3 (pool3, pt_inception-2015-12-05 weights), torch-only",
    uses="sample",
    requires=None,
    capability="sample",
    outputs=("fid",),
    ranges={"num_samples": ">= 2", "sample_batch_size": ">= 1", "num_reference": ">= 2", "reference_seed": ">= 0", "batch_size": ">= 1",
            "sampler": parse_sampling_protocol},
)
METRICS.register(
    "betavae",
    "bench.metrics.betavae:betavae_score",
    "BetaVAE score (Higgins et al. 2017), disentanglement_lib definition (logistic regression)",
    uses="encode",
    requires="factors",
    outputs=("betavae",),
    ranges={"batch_size": ">= 1", "num_train": ">= 1", "num_eval": ">= 1", "encode_batch_size": ">= 1"},
)
METRICS.register(
    "mig",
    "bench.metrics.mig:mig",
    "Mutual Information Gap (Chen et al. 2018), 20-bin histogram estimate, normalised by factor entropy",
    uses="encode",
    requires="factors",
    outputs=("mig",),
    ranges={"num_train": ">= 1", "batch_size": ">= 1", "num_bins": ">= 2"},
)
METRICS.register(
    "sap",
    "bench.metrics.sap:sap",
    "SAP score (Kumar et al. 2018), per-code LinearSVC accuracy, top-two gap",
    uses="encode",
    requires="factors",
    outputs=("sap",),
    ranges={"num_train": ">= 1", "num_test": ">= 1", "batch_size": ">= 1"},
)
METRICS.register(
    "modularity_explicitness",
    "bench.metrics.modularity:modularity_explicitness",
    "Modularity and Explicitness (Ridgeway & Mozer 2018), disentanglement_lib definition",
    uses="encode",
    requires="factors",
    outputs=("modularity", "explicitness"),
    ranges={"num_train": ">= 1", "num_test": ">= 1", "batch_size": ">= 1", "num_bins": ">= 2"},
)
METRICS.register(
    "irs",
    "bench.metrics.irs:irs",
    "Interventional Robustness Score (Suter et al. 2019), diff_quantile 0.99",
    uses="encode",
    requires="factors",
    outputs=("irs",),
    ranges={"num_train": ">= 1", "batch_size": ">= 1", "diff_quantile": "(0, 1]", "num_bins": ">= 2"},
)
METRICS.register(
    "unsupervised",
    "bench.metrics.unsupervised:unsupervised",
    "Gaussian total correlation and mean pairwise mutual information of the codes (disentanglement_lib)",
    uses="encode",
    requires="factors",
    outputs=("gaussian_tc", "mutual_info"),
    ranges={"num_train": ">= 2", "batch_size": ">= 1", "num_bins": ">= 2"},
)
METRICS.register(
    "udr",
    "bench.metrics.udr:udr",
    "UDR (Duan et al. 2020): agreement of a setting's seeds, lasso or Spearman, KL-filtered latents",
    uses="models",
    requires=None,
    scope="seeds",
    outputs=("udr",),
    ranges={"num_data_points": ">= 2", "correlation": ("lasso", "spearman"), "kl_threshold": ">= 0", "alpha": "> 0"},
)
METRICS.register(
    "infomec",
    "bench.metrics.infomec:infomec",
    "InfoM, InfoE, InfoC (Hsu et al. 2023, latent quantization): NMI by kNN (or plug-in for discrete codes), logistic probe",
    uses="encode",
    requires="factors",
    outputs=("infom", "infoe", "infoc"),
    ranges={"num_train": ">= 2", "batch_size": ">= 1", "n_neighbors": ">= 1", "active_fraction": "[0, 1)",
            "max_iter": ">= 1", "zero_information": ("reference", "exclude")},
)
METRICS.register(
    "dci_es",
    "bench.metrics.dci_es:dci_es",
    "DCI-ES (Eastwood et al. 2023): explicitness = area under the loss-capacity curve of random-forest probes, size",
    uses="encode",
    requires="factors",
    outputs=("dci_es_explicitness", "dci_es_size", "dci_es_disentanglement", "dci_es_completeness",
             "dci_es_informativeness"),
    ranges={"num_train": ">= 2", "num_test": ">= 1", "batch_size": ">= 1", "probe": ("random_forest",),
            "capacities": "each >= 1", "num_trees": ">= 1", "continuous_factors": "each >= 0",
            "floor": ("curve_min", "zero")},
)
