"""The generative model behind `mmfm synth`: latent disease, per-modality evidence, and its exact posterior.

Why a model and not random data: model quality must be measured against a known limit. Every observable the
extracts carry is drawn from a distribution written down here, so the Bayes-optimal posterior
P(class | everything a reader could extract) is computed exactly (`posterior`) and written to the truth file.

The posterior conditions on the *latent findings* the renderers draw (heart size, opacity, vessel defect, lab
levels, symptom mentions, module scores). The renderers turn them into pixels, numbers and prose with little
extra noise, so this is the best achievable score (an upper bound for any model reading the files).

Structure (all per patient):
    age, sex                       -> prior over class y (softmax of linear logits)
    y                              -> cardiomegaly z (binary latent, seen only through the heart size in images)
    imaging   : ctr | z ; log-opacity | y ; CT (half of imaged patients) log-defect | y
    labs      : log-level of each lab | y (NT-proBNP | y, z : the cross-modal interaction: high BNP with a large
                heart means heart failure, high BNP with a normal heart means right-heart strain from embolism)
    notes     : symptom mentions | y (Bernoulli)
    omics     : module scores | y ; genes = loadings @ scores + noise (the GLS projection is sufficient)
    survival  : exponential hazard from y, age and two omics modules; uniform censoring
Missing modalities are missing completely at random, so the posterior just drops their likelihood terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from data_contracts import diagnosis_names

CLASSES = diagnosis_names()  # data_contracts/labels.yaml: the generator writes the classes the model reads
MODALITIES = ("imaging", "labs", "notes", "omics")

# ---- prior over the class given demographics: logits = A + B * (age - 60) / 20 + C * male
PRIOR_A = np.array([1.0, 0.2, 0.0, -0.3])
PRIOR_B = np.array([-0.4, 0.0, 0.7, 0.1])
PRIOR_C = np.array([0.0, 0.1, 0.2, -0.1])

P_CARDIOMEGALY = np.array([0.12, 0.15, 0.65, 0.35])  # P(z = 1 | y)

# ---- imaging findings
CTR_MEAN = (0.46, 0.54)  # cardiothoracic ratio given z = 0 / 1
CTR_SD = 0.045
LOG_OPACITY_MEAN = np.array([-1.6, -0.7, -1.1, -1.4])  # patchy airspace opacity, fraction of lung contrast
LOG_OPACITY_SD = 0.7
P_CT_GIVEN_IMAGING = 0.5  # CT pulmonary angiogram ordered for half of imaged patients, at random
LOG_DEFECT_MEAN = np.array([-2.0, -2.0, -2.0, -1.0])  # filling defect depth in the pulmonary artery
LOG_DEFECT_SD = 0.8


@dataclass(frozen=True)
class LabSpec:
    """How one lab or vital sign is generated (its code, unit and range live in data_contracts/labs.yaml).

    Log-scale labs are log-normal: the class (and, for NT-proBNP, cardiomegaly) shifts the mean of log(value).
    Each patient has a level ~ N(mean, between_sd); each measurement = level + N(0, within_sd).
    """

    key: str
    mean: tuple  # per class, or per class a (z=0, z=1) pair for NT-proBNP
    between_sd: float
    within_sd: float
    transform: str = "log"  # "log": Gaussian in log(value); "identity"; "deficit": Gaussian in log(100 - value)
    decimals: int = 1  # how the lab system reports it


LABS: tuple[LabSpec, ...] = (
    LabSpec("wbc", tuple(np.log([7.0, 9.0, 7.8, 8.0])), 0.40, 0.10),
    LabSpec("crp", tuple(np.log([6.0, 18.0, 9.0, 11.0])), 1.4, 0.25),
    LabSpec("ntprobnp", ((np.log(150), np.log(250)), (np.log(180), np.log(300)), (np.log(250), np.log(3000)),
                         (np.log(2500), np.log(250))), 0.8, 0.15, decimals=0),
    LabSpec("ddimer", tuple(np.log([450.0, 650.0, 550.0, 1000.0])), 0.9, 0.15, decimals=0),
    LabSpec("heart_rate", (80.0, 86.0, 85.0, 90.0), 15.0, 6.0, transform="identity", decimals=0),
    LabSpec("temperature", (36.8, 37.3, 36.9, 37.0), 0.6, 0.25, transform="identity", decimals=1),
    LabSpec("spo2", tuple(np.log([3.0, 4.0, 3.8, 4.5])), 0.6, 0.15, transform="deficit", decimals=0),
)
LAB_BY_KEY = {lab.key: lab for lab in LABS}

# ---- notes: probability that a note mentions each symptom as present, per class
SYMPTOMS = ("cough", "fever", "dyspnea", "orthopnea", "leg_swelling", "pleuritic_chest_pain", "hemoptysis")
P_SYMPTOM = np.array([
    [0.25, 0.55, 0.30, 0.25],  # cough
    [0.15, 0.45, 0.15, 0.20],  # fever
    [0.35, 0.50, 0.65, 0.65],  # dyspnea
    [0.08, 0.10, 0.35, 0.10],  # orthopnea
    [0.10, 0.10, 0.35, 0.25],  # leg swelling
    [0.12, 0.25, 0.12, 0.40],  # pleuritic chest pain
    [0.03, 0.06, 0.03, 0.10],  # hemoptysis
])

# ---- omics: module scores | y ~ N(mean, 1); the last module only drives survival
MODULES = ("inflammation", "cardiac_remodeling", "coagulation", "prognostic")
MODULE_MEAN = np.array([
    [0.0, 0.8, 0.2, 0.3],
    [0.0, 0.1, 0.8, 0.2],
    [0.0, 0.2, 0.1, 0.8],
    [0.0, 0.0, 0.0, 0.0],
])
N_GENES = 200
GENES_PER_MODULE = 25
GENE_NOISE_SD = 1.0
GENE_BASELINE = 8.0  # log2 expression
BIOLOGY_SEED = 20240101  # gene names and loadings are the same in every cohort: one biology, many hospitals

# ---- survival (years): hazard = BASE * exp(class effect + age effect + module effects)
HAZARD_BASE = 0.12
HAZARD_CLASS = np.array([0.0, 0.5, 1.0, 0.8])
HAZARD_AGE_PER_DECADE = 0.35
HAZARD_MODULES = np.array([0.3, 0.0, 0.0, 0.6])
CENSOR_YEARS = (0.25, 3.0)


@dataclass(frozen=True)
class Biology:
    """Gene names and the loadings matrix (genes x modules), fixed across cohorts."""

    genes: tuple[str, ...]
    loadings: np.ndarray  # (N_GENES, n_modules)

    @property
    def score_noise_var(self) -> np.ndarray:
        """Variance of the GLS module-score estimate from genes; diagonal because modules use disjoint genes."""
        return GENE_NOISE_SD**2 / (self.loadings**2).sum(axis=0)

    def project(self, expression: np.ndarray) -> np.ndarray:
        """Sufficient statistic of the genes for the module scores: (L'L)^-1 L'(g - baseline). (N, genes) -> (N, M)"""
        centred = np.asarray(expression, dtype=float) - GENE_BASELINE
        return centred @ self.loadings / (self.loadings**2).sum(axis=0)


def biology() -> Biology:
    rng = np.random.default_rng(BIOLOGY_SEED)
    loadings = np.zeros((N_GENES, len(MODULES)))
    for m in range(len(MODULES)):
        rows = slice(m * GENES_PER_MODULE, (m + 1) * GENES_PER_MODULE)
        loadings[rows, m] = rng.uniform(0.4, 0.9, GENES_PER_MODULE) * rng.choice([-1.0, 1.0], GENES_PER_MODULE)
    order = rng.permutation(N_GENES)  # module genes are scattered among the others, as in real panels
    genes = tuple(f"GENE{idx:04d}" for idx in range(N_GENES))
    return Biology(genes=genes, loadings=loadings[order])


@dataclass
class Evidence:
    """The latent findings of one patient: what the renderers draw and the posterior conditions on."""

    age: float
    male: bool
    label: int
    cardiomegaly: bool
    present: dict[str, bool]
    ctr: float = float("nan")
    log_opacity: float = float("nan")
    has_ct: bool = False
    log_defect: float = float("nan")
    lab_values: dict[str, np.ndarray] = field(default_factory=dict)  # canonical-unit measurements per lab key
    symptoms: np.ndarray = field(default_factory=lambda: np.zeros(len(SYMPTOMS), dtype=bool))
    modules: np.ndarray = field(default_factory=lambda: np.zeros(len(MODULES)))
    expression: np.ndarray | None = None  # (N_GENES,) log2 expression
    survival_days: int = 0
    event: bool = False


def prior_logits(age: np.ndarray, male: np.ndarray) -> np.ndarray:
    """(N,) ages and sexes -> (N, classes) unnormalised log prior."""
    age = np.asarray(age, dtype=float)[:, None]
    return PRIOR_A + PRIOR_B * (age - 60.0) / 20.0 + PRIOR_C * np.asarray(male, dtype=float)[:, None]


def _lab_mean(lab: LabSpec, y: int, z: bool) -> float:
    mean = lab.mean[y]
    return float(mean[int(z)]) if isinstance(mean, tuple) else float(mean)


def to_latent(lab: LabSpec, values: np.ndarray) -> np.ndarray:
    """Canonical-unit values -> the scale on which the lab is Gaussian."""
    values = np.asarray(values, dtype=float)
    if lab.transform == "deficit":
        return np.log(100.0 - values)
    return np.log(values) if lab.transform == "log" else values


def from_latent(lab: LabSpec, latent: np.ndarray) -> np.ndarray:
    latent = np.asarray(latent, dtype=float)
    if lab.transform == "deficit":
        return 100.0 - np.exp(latent)
    return np.exp(latent) if lab.transform == "log" else latent


def sample_evidence(rng: np.random.Generator, bio: Biology, missing_rate: float, age_shift: float = 0.0) -> Evidence:
    """Draw one patient. The order of draws is fixed so a seed always gives the same patient."""
    age = float(np.clip(rng.normal(62.0 + age_shift, 15.0), 18.0, 101.0))
    male = bool(rng.random() < 0.5)
    logits = prior_logits(np.array([age]), np.array([male]))[0]
    prior = np.exp(logits - logsumexp(logits))
    y = int(rng.choice(len(CLASSES), p=prior))
    z = bool(rng.random() < P_CARDIOMEGALY[y])
    present = {m: bool(rng.random() >= missing_rate) for m in MODALITIES}
    ev = Evidence(age=age, male=male, label=y, cardiomegaly=z, present=present)

    ev.ctr = float(rng.normal(CTR_MEAN[int(z)], CTR_SD))
    ev.log_opacity = float(rng.normal(LOG_OPACITY_MEAN[y], LOG_OPACITY_SD))
    ev.has_ct = bool(rng.random() < P_CT_GIVEN_IMAGING)
    ev.log_defect = float(rng.normal(LOG_DEFECT_MEAN[y], LOG_DEFECT_SD))
    for lab in LABS:
        n_obs = int(rng.integers(1, 4))
        level = rng.normal(_lab_mean(lab, y, z), lab.between_sd)
        ev.lab_values[lab.key] = from_latent(lab, level + rng.normal(0.0, lab.within_sd, n_obs))
    ev.symptoms = rng.random(len(SYMPTOMS)) < P_SYMPTOM[:, y]
    ev.modules = rng.normal(MODULE_MEAN[:, y], 1.0)
    ev.expression = GENE_BASELINE + bio.loadings @ ev.modules + rng.normal(0.0, GENE_NOISE_SD, N_GENES)

    hazard = HAZARD_BASE * np.exp(HAZARD_CLASS[y] + HAZARD_AGE_PER_DECADE * (age - 60.0) / 10.0
                                  + HAZARD_MODULES @ ev.modules)
    t_event, t_censor = rng.exponential(1.0 / hazard), rng.uniform(*CENSOR_YEARS)
    ev.event = bool(t_event <= t_censor)
    ev.survival_days = max(1, int(round(min(t_event, t_censor) * 365.25)))
    if not present["imaging"]:
        ev.has_ct = False
    return ev


def _norm_logpdf(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2.0 * np.pi)


def posterior(table: dict[str, np.ndarray], use: tuple[str, ...] = MODALITIES) -> np.ndarray:
    """Exact P(y | demographics, evidence of the modalities in `use` that each patient has). (N, classes).

    `table` holds column arrays as written to the truth file (see `truth_columns`). Vectorised: N patients at once.
    """
    n = len(table["age"])
    n_cls = len(CLASSES)
    # log joint over (y, z): (N, classes, 2)
    log_joint = prior_logits(table["age"], table["male"])[:, :, None] + np.stack(
        [np.log1p(-P_CARDIOMEGALY), np.log(P_CARDIOMEGALY)], axis=-1)[None]
    log_joint = np.broadcast_to(log_joint, (n, n_cls, 2)).copy()

    if "imaging" in use:
        img = table["present_imaging"].astype(bool)
        ll_ctr = _norm_logpdf(table["ctr"][:, None], np.array(CTR_MEAN)[None], CTR_SD)  # (N, 2)
        ll_op = _norm_logpdf(table["log_opacity"][:, None], LOG_OPACITY_MEAN[None], LOG_OPACITY_SD)  # (N, C)
        ct = img & table["has_ct"].astype(bool)
        ll_ct = _norm_logpdf(table["log_defect"][:, None], LOG_DEFECT_MEAN[None], LOG_DEFECT_SD)
        log_joint[img] += ll_ctr[img][:, None, :] + ll_op[img][:, :, None]
        log_joint[ct] += ll_ct[ct][:, :, None]
    if "labs" in use:
        has = table["present_labs"].astype(bool)
        for lab in LABS:
            n_obs = table[f"n_{lab.key}"].astype(float)
            sd = np.sqrt(lab.between_sd**2 + lab.within_sd**2 / np.maximum(n_obs, 1.0))[:, None, None]
            means = np.array([[_lab_mean(lab, y, bool(z)) for z in (0, 1)] for y in range(n_cls)])  # (C, 2)
            ll = _norm_logpdf(table[f"mean_{lab.key}"][:, None, None], means[None], sd)
            log_joint[has] += ll[has]
    if "notes" in use:
        has = table["present_notes"].astype(bool)
        s = np.stack([table[f"symptom_{name}"] for name in SYMPTOMS], axis=1).astype(float)  # (N, S)
        ll = s @ np.log(P_SYMPTOM) + (1.0 - s) @ np.log1p(-P_SYMPTOM)  # (N, C)
        log_joint[has] += ll[has][:, :, None]
    if "omics" in use:
        has = table["present_omics"].astype(bool)
        sd = np.sqrt(1.0 + biology().score_noise_var)  # (M,)
        est = np.stack([table[f"score_{name}"] for name in MODULES], axis=1)  # (N, M)
        ll = _norm_logpdf(est[:, :, None], MODULE_MEAN[None], sd[None, :, None]).sum(axis=1)  # (N, C)
        log_joint[has] += ll[has][:, :, None]

    log_y = logsumexp(log_joint, axis=2)
    return np.exp(log_y - logsumexp(log_y, axis=1, keepdims=True))


def truth_columns(ev: Evidence, bio: Biology) -> dict[str, float]:
    """The sufficient statistics of one patient, as they go into the truth file and `posterior`."""
    row: dict[str, float] = {
        "age": round(ev.age, 3), "male": int(ev.male), "label": ev.label, "cardiomegaly": int(ev.cardiomegaly),
        "ctr": ev.ctr, "log_opacity": ev.log_opacity, "has_ct": int(ev.has_ct), "log_defect": ev.log_defect,
        "survival_days": ev.survival_days, "event": int(ev.event),
    }
    row.update({f"present_{m}": int(ev.present[m]) for m in MODALITIES})
    for lab in LABS:
        latent = to_latent(lab, ev.lab_values[lab.key])
        row[f"n_{lab.key}"] = len(latent)
        row[f"mean_{lab.key}"] = float(latent.mean())
    row.update({f"symptom_{name}": int(v) for name, v in zip(SYMPTOMS, ev.symptoms, strict=True)})
    est = bio.project(ev.expression[None])[0]
    row.update({f"score_{name}": float(v) for name, v in zip(MODULES, est, strict=True)})
    return row
