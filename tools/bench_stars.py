"""Star recovery under astrotf's training prior and on held-out settings, every method side by side.

Used by ``tools/bench_quality.py`` (``--prior-fields``, ``--held-out-fields``, ``--linear-model``); the
real-frame section is ``tools/bench_real.py`` (``--real``). Issue #21 item 4; the measures are those of
BENCHMARKS.md §2, from :mod:`astrotf.metrics.depth`:

* **Fields.** ``simulate_star_field(prior.field)`` with a detector drawn from ``prior.detector`` (gain,
  read noise; the exposure ratio r as given, 2 and 5 by default), cosmic rays and hot pixels
  (:func:`astrotf.data.artefacts.simulate_artefacts`) and the noisy short exposure in ADU from
  :func:`astrotf.data.prior.observe`; its truth is ``clean / (r · gain)`` in the same units. The
  *in-distribution* group draws from :func:`astrotf.data.prior.training_prior` (seeds 40000+, the
  training fields use 0-199 and 7000000+); the *held-out* group from every
  :func:`astrotf.data.prior.validation_priors` axis (seeds 50000+), and the ``long_ratio`` axis at its
  own ratios (12-20). Detections near an artefact are neither true nor false.
* **Matched contamination.** Per group, ratio and method one threshold ``k`` × each image's own σ,
  the lowest with at most 5 false sources per 1024² over the group's whole area; completeness of the
  stars there and the 50 % completeness magnitude, m50, on the scale of the stars' true S/N
  (``-2.5 log10(S/N)``, so that fields of any sky, gain and ratio pool; in the background limit a
  Δm50 is the same as in flux), with Δm50 against the noisy input on the same stars, for all stars
  and for isolated ones (no other source within 2 FWHM with a tenth of its flux: the domain of the
  matched-filter limit). A false source is an unmatched detection farther than one FWHM from every
  true source of true S/N >= 3 (nearer, it is a blend or a split source).
* **Matched filter.** The noisy input correlated with its true PSF (``astrotf.data.psf.PSF`` from the
  catalogue's meta), detected without `sep`'s 3×3 filter at its peak. On these fields it is NOT an
  upper bound for `sep`'s own detection: the PSF-wide filter merges neighbours, turns unresolved faint
  stars, galaxy outskirts and background-mesh residuals into peaks, so at matched contamination it
  lands 0-0.5 mag below the input. Read its row as a reference, not as a bound.
* **Matched-filter limit.** The bound itself, measured where it holds
  (:func:`astrotf.metrics.matched_filter_limit`): for each field's PSF, isolated point sources in
  white noise, detected as local maxima of the PSF-filtered image above the threshold that leaves
  the same 5 false sources per 1024² in noise alone. Its m50, weighted over the group's fields by
  their isolated stars, is compared with every method's m50 of isolated stars ("isolated to limit").
* **Fixed threshold.** 3 × the input's background σ for every image: the fraction of the stars of
  true S/N >= 5 (PSF-optimal, :func:`astrotf.metrics.point_source_snr`) found in the input that
  each output still finds, and the same among those the noise-free truth also finds there (the
  input finds some fainter ones only on an upward noise peak; the truth keeps 96-98 % of them).
* **Own background.** 1.5 × each image's own σ (SExtractor's default): false sources per 1024² and
  precision.
* **Flux.** Stars found at the fixed threshold in both the input and the output: aperture flux
  (1.5 FWHM, forced at the true positions, each image minus its own `sep` background) against the
  noise-free truth's in the same aperture: median ``|ΔF/F|`` and the median ``ΔF/F`` (bias).
* **Sky.** ``median(output - truth) / σ_in`` over pixels where the truth is sky (sources below 0.1 σ_in,
  artefacts excluded), the median over fields.

A noise-conditioned model (two inputs, ``image`` and ``noise_sigma``) runs on the whole field with
the σ map of ``NoiseModel(gain, read_noise)`` (the true detector), by a direct Keras call, and its output
gets the input's sky level (:func:`astrotf.sky_level.keep_sky_level`) as ``astrotf infer`` gives it.
The noise-free truth is scored too, as an oracle: at the fixed threshold it shows which stars the input
finds only on a noise peak.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from astrotf import metrics
from astrotf.data.artefacts import simulate_artefacts
from astrotf.data.prior import HELD_OUT, Prior, observe, training_prior, validation_priors
from astrotf.data.psf import PSF
from astrotf.data.simulate import simulate_star_field
from bench_report import fmt, progress, save_png, table

INPUT, MATCHED_FILTER, TRUTH = "noisy input", "PSF matched filter (limit)", "noise-free truth (oracle)"
IN_DISTRIBUTION_SEED, HELD_OUT_SEED = 40_000, 50_000
FIXED_SIGMA, OWN_SIGMA, SNR_MIN = 3.0, 1.5, 5.0
MATCH_RADIUS, APERTURE_FWHM = 2.0, 1.5
NEAR_SNR = 3.0  # an unmatched detection within one FWHM of a source of this true S/N is a blend, not false
LONG_RATIO = "long_ratio"


# ----------------------------------------------------------------------------- fields
@dataclasses.dataclass
class PriorField:
    """One simulated exposure in ADU and everything the scores need about it."""

    setting: str
    noisy: np.ndarray
    truth: np.ndarray
    xy: np.ndarray
    star: np.ndarray
    flux_e: np.ndarray
    psf: PSF
    gain: float
    read_noise: float
    ratio: float
    sky_e: float
    artefact_xy: np.ndarray

    @property
    def noise_model(self):
        from astrotf.noise_model import NoiseModel

        return NoiseModel(self.gain, self.read_noise)


def prior_field(setting: str, prior: Prior, seed: int, ratio: float | None) -> PriorField:
    """A field of ``prior`` at exposure ratio ``ratio`` (None: the prior's own draw)."""
    clean, catalogue = simulate_star_field(prior.field, seed=seed)
    detector = prior.detector.draw(np.random.default_rng([seed, 1]))
    r = detector["exposure_ratio"] if ratio is None else float(ratio)
    artefacts, mask = simulate_artefacts(prior.field, seed=seed + 1_000_000)
    noisy = observe(clean, detector["gain"], detector["read_noise"], r, seed=seed + 2_000_000, artefacts=artefacts,
                    saturation=prior.field.saturation)
    meta = catalogue.meta
    psf = PSF(meta["psf_kind"], meta["fwhm"], meta["moffat_beta"], meta["psf_ellipticity"], meta["psf_angle"])
    return PriorField(setting, noisy, (clean / (r * detector["gain"])).astype(np.float32),
                      np.column_stack([catalogue["x"], catalogue["y"]]).astype(np.float64),
                      np.asarray(catalogue["kind"]) == "star", np.asarray(catalogue["flux"], np.float64), psf,
                      detector["gain"], detector["read_noise"], r, float(meta["sky"]),
                      np.argwhere(mask > 0)[:, ::-1].astype(np.float64))


def field_groups(n_in: int, n_held: int, ratios: list[float], size: int, axes: list[str] | None = None) -> dict:
    """``{(group, ratio label): [(setting, prior, seed, ratio), ...]}``: the fields to make, lazily."""
    shape = (size, size)
    groups: dict = {}
    base = training_prior(shape)
    for j, r in enumerate(ratios):
        if n_in:
            groups[("in-distribution", f"{r:g}")] = [("training", base, IN_DISTRIBUTION_SEED + 1000 * j + i, r)
                                                     for i in range(n_in)]
    priors = validation_priors(shape)
    axes = list(HELD_OUT) if axes is None else axes
    for j, r in enumerate(ratios):
        todo = [(a, priors[a], HELD_OUT_SEED + 10_000 * j + 100 * list(HELD_OUT).index(a) + i, r)
                for a in axes if a != LONG_RATIO for i in range(n_held)]
        if todo:
            groups[("held-out", f"{r:g}")] = todo
    if LONG_RATIO in axes and n_held:
        seeds = range(HELD_OUT_SEED + 90_000, HELD_OUT_SEED + 90_000 + n_held * len(ratios))
        groups[("held-out", "12-20")] = [(LONG_RATIO, priors[LONG_RATIO], s, None) for s in seeds]
    return groups


# ----------------------------------------------------------------------------- methods
def noise_conditioned(path, sky_level: bool = True):
    """A Keras model with inputs ``image`` and ``noise_sigma`` (a ``.keras`` file, a folder holding one, or a
    shipped model's name), called on the whole frame with the σ map of the frame's noise model, then
    (``sky_level``) given the input's sky level as ``astrotf infer`` does."""
    from pathlib import Path

    import keras

    import astrotf.models.registered  # noqa: F401 - registers the custom classes for loading
    from astrotf.sky_level import keep_sky_level

    found = Path(path)
    if not found.exists():
        from astrotf.backends import resolve_model_path

        found = resolve_model_path(path)
    if found.is_dir():
        files = sorted(found.rglob("*.keras"), key=lambda p: (p.name != "model.keras", -p.stat().st_mtime))
        if not files:
            raise SystemExit(f"--linear-model {path}: no .keras file in {found}")
        found = files[0]
    model = keras.saving.load_model(found, compile=False)
    names = [t.name.split(":")[0] for t in model.inputs]
    if sorted(names) != ["image", "noise_sigma"]:
        raise SystemExit(f"--linear-model {found}: inputs {names}, not ('image', 'noise_sigma')")

    def run(x: np.ndarray, noise_model) -> np.ndarray:
        image = np.nan_to_num(np.asarray(x, np.float32))[None, ..., None]
        sigma = np.nan_to_num(noise_model.sigma_map(image).astype(np.float32))
        out = np.asarray(model({"image": image, "noise_sigma": sigma}, training=False), np.float32)[0]
        if sky_level:
            out = keep_sky_level(out, image[0], sigma[0]).image
        return out[..., 0]

    run.noise_conditioned = True
    run.source = str(found)
    return run


def as_infer(method, strength: float):
    """What ``astrotf infer --strength S`` makes of a noise-conditioned model's output: the blend
    ``S * method(x) + (1 - S) * x``, then the soft restore with the frame's σ map (on by default)."""
    from astrotf.restore import RestoreOptions, restore_and_report

    def run(x: np.ndarray, noise_model) -> np.ndarray:
        image = np.asarray(x, np.float32)[..., None]
        sigma = noise_model.sigma_map(image[None])[0]
        out, _ = restore_and_report(image, method(x, noise_model)[..., None], RestoreOptions(strength=strength),
                                    soft=True, noise_sigma=sigma)
        return out[..., 0]

    run.noise_conditioned = True
    run.source = getattr(method, "source", None)
    return run


def run_on_field(field: PriorField, methods: dict) -> dict:
    """``{name: (output, seconds, prefiltered)}``: the input, its matched filter and every method."""
    kernel, _ = field.psf.kernel()
    outputs = {INPUT: (field.noisy, 0.0, False),
               MATCHED_FILTER: (metrics.psf_matched_filter(field.noisy, kernel).astype(np.float32), 0.0, True),
               TRUTH: (field.truth, 0.0, False)}
    for name, method in methods.items():
        if hasattr(method, "prepare"):
            method.prepare(field.noisy.shape)
        start = time.perf_counter()
        try:
            out = method(field.noisy, field.noise_model) if getattr(method, "noise_conditioned", False) \
                else method(field.noisy)
        except Exception as err:  # noqa: BLE001 - one broken method must not end the benchmark
            progress(f"  {field.setting}: {name} FAILED: {type(err).__name__}: {err}")
            continue
        outputs[name] = (np.asarray(out, np.float32), time.perf_counter() - start, False)
    return outputs


# ----------------------------------------------------------------------------- scores of one field
@dataclasses.dataclass
class FieldScore:
    sub: np.ndarray
    sigma: float
    fixed: np.ndarray
    own: metrics.Detections
    flux: np.ndarray
    sky_bias: float
    seconds: float
    prefiltered: bool


def _field_reference(field: PriorField) -> dict:
    """What every image of a field is scored against: σ_in, the truth's fluxes and sky pixels, S/N."""
    sigma_in = metrics.background_noise(metrics.subtract_background(field.noisy)).sigma
    truth_sub = metrics.subtract_background(field.truth)
    aperture = max(2.0, APERTURE_FWHM * field.psf.fwhm)
    sky = truth_sub < 0.1 * sigma_in  # the truth's own sep background is its sky
    if len(field.artefact_xy):
        ax, ay = field.artefact_xy[:, 0].astype(int), field.artefact_xy[:, 1].astype(int)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                sky[np.clip(ay + dy, 0, sky.shape[0] - 1), np.clip(ax + dx, 0, sky.shape[1] - 1)] = False
    kernel, _ = field.psf.kernel()
    snr = metrics.point_source_snr(field.flux_e / field.ratio, field.sky_e / field.ratio + field.read_noise**2, kernel)
    stars = field.star & (field.flux_e > 0)
    return {"sigma_in": sigma_in, "aperture": aperture, "sky": sky, "snr": snr, "stars": stars,
            "isolated": _isolated(field), "near": snr >= NEAR_SNR,
            "truth_flux": metrics.aperture_flux(truth_sub, field.xy[stars, 0], field.xy[stars, 1], aperture),
            "false_radius": max(MATCH_RADIUS, field.psf.fwhm)}


def _limit(fields: list[PriorField], refs: list[dict]) -> dict:
    """The PSF matched-filter limit of a group (:func:`astrotf.metrics.matched_filter_limit` for each field's
    PSF, in white noise): its m50 per field, and their mean weighted by each field's isolated stars."""
    per_field = [metrics.matched_filter_limit(f.psf.kernel()[0], seed=i).m50 for i, f in enumerate(fields)]
    weights = np.array([float(np.sum(f.star & r["isolated"] & (r["snr"] > 0))) for f, r in zip(fields, refs)])
    weights = weights if weights.sum() > 0 else np.ones(len(fields))
    return {"m50": float(np.average(per_field, weights=weights)), "per_field": per_field}


def _isolated(field: PriorField) -> np.ndarray:
    """Per source: no other true source within 2 FWHM with at least a tenth of its flux."""
    from scipy.spatial import cKDTree

    tree = cKDTree(field.xy)
    alone = np.ones(len(field.xy), dtype=bool)
    for i, near in enumerate(tree.query_ball_point(field.xy, 2.0 * field.psf.fwhm)):
        alone[i] = not any(j != i and field.flux_e[j] >= 0.1 * field.flux_e[i] for j in near)
    return alone


def score_image(image: np.ndarray, field: PriorField, ref: dict, seconds: float, prefiltered: bool,
                oracle: bool = False) -> FieldScore:
    """The scores of one image; ``oracle`` (the noise-free truth): the fixed-threshold, flux and sky views
    only, since it has no background noise to scale the others by."""
    sub = metrics.subtract_background(image)
    common = {"radius": MATCH_RADIUS, "false_radius": ref["false_radius"], "near": ref["near"],
              "exclude_xy": field.artefact_xy, "prefiltered": prefiltered}
    fixed = metrics.detect_and_match(sub, field.xy, FIXED_SIGMA * ref["sigma_in"], **common).found
    if oracle:
        sigma, own = float("nan"), None
    else:
        sigma = metrics.background_noise(sub).sigma  # after the sky's gradient is taken off (up to 20 % of the sky)
        own = metrics.precision_at_sigma(sub, field.xy, sigma, OWN_SIGMA, **common)
    stars = ref["stars"]
    flux = metrics.aperture_flux(sub, field.xy[stars, 0], field.xy[stars, 1], ref["aperture"])
    bias = metrics.sky_bias(image, field.truth, ref["sigma_in"], ref["sky"]) if ref["sky"].sum() >= 10 else np.nan
    return FieldScore(sub.astype(np.float32), sigma, fixed, own, flux, bias, seconds, prefiltered)


# ----------------------------------------------------------------------------- a group of fields
def bench_group(specs: list, methods: dict, label: str) -> dict:
    """Every method on the fields of one group and ratio (``specs`` from `field_groups`), pooled."""
    fields, refs, scores = [], [], {}
    for i, spec in enumerate(specs):
        field = prior_field(*spec)
        ref = _field_reference(field)
        fields.append(field)
        refs.append(ref)
        outputs = run_on_field(field, methods)
        for name, (image, seconds, pre) in outputs.items():
            scores.setdefault(name, []).append(score_image(image, field, ref, seconds, pre, oracle=name == TRUTH))
        progress(f"  {label} field {i + 1}/{len(specs)} ({spec[0]}): {len(field.xy)} sources, "
                 f"FWHM {field.psf.fwhm:.1f} px, gain {field.gain:.2f}, r {field.ratio:.3g}")
    allowance = metrics.false_allowance([f.noisy.shape for f in fields])
    report = {"n_fields": len(fields), "area_px": int(sum(f.noisy.size for f in fields)), "max_false": allowance,
              "settings": sorted({f.setting for f in fields}), "methods": {}, "mf_limit": _limit(fields, refs)}
    for name, per_field in scores.items():
        report["methods"][name] = summarise(name, per_field, scores[INPUT], scores[TRUTH], fields, refs, allowance)
    baseline = report["methods"][INPUT]
    for name, row in report["methods"].items():
        if name == TRUTH:
            continue
        row["dm50"] = row["m50"] - baseline["m50"]
        row["dm50_isolated"] = row["m50_isolated"] - baseline["m50_isolated"]
        row["to_limit"] = row["m50_isolated"] - report["mf_limit"]["m50"]
        if name == MATCHED_FILTER:  # a detection image, not a denoised one: no fixed-threshold or flux view
            row.update(kept_snr5=None, kept_snr5_real=None, flux_abs_error_median=None, flux_bias=None, n_flux=0)
        for axis, values in row["per_setting"].items():
            values["dm50"] = values["m50"] - baseline["per_setting"][axis]["m50"]
    return report


def _depth(matched: list, fields: list[PriorField], refs: list[dict], select) -> dict:
    """m50 (S/N magnitude) and completeness over the stars ``select(field, ref)`` of the fields given."""
    mags = [-2.5 * np.log10(np.maximum(r["snr"], 1e-30))[select(f, r)] for f, r in zip(fields, refs)]
    found = [d.found[select(f, r)] for d, f, r in zip(matched, fields, refs)]
    mags, found = (np.concatenate(mags), np.concatenate(found)) if mags else (np.zeros(0), np.zeros(0, bool))
    return {"m50": metrics.completeness_magnitude(mags, found),
            "completeness": float(np.mean(found)) if found.size else float("nan"), "n_stars": int(found.size),
            "mags": mags, "found": found}


def _fixed_threshold(per_field: list[FieldScore], inputs: list[FieldScore], truths: list[FieldScore],
                     fields: list[PriorField], refs: list[dict]) -> dict:
    """Stars of true S/N >= SNR_MIN that the input finds at the fixed threshold, and among those the ones
    the noise-free truth finds too: the fraction of each kept; the flux errors of stars found in both."""
    kept, base, kept_real, base_real, errors = 0, 0, 0, 0, []
    for s, i, t, r, f in zip(per_field, inputs, truths, refs, fields):
        bright = i.fixed & (r["snr"] >= SNR_MIN) & f.star
        base, kept = base + bright.sum(), kept + (bright & s.fixed).sum()
        base_real, kept_real = base_real + (bright & t.fixed).sum(), kept_real + (bright & t.fixed & s.fixed).sum()
        both = (s.fixed & i.fixed)[r["stars"]] & (r["truth_flux"] > 0)
        errors.append(s.flux[both] / r["truth_flux"][both] - 1.0)
    err = np.concatenate(errors) if errors else np.zeros(0)
    return {"kept_snr5": float(kept / base) if base else float("nan"), "n_snr5": int(base),
            "kept_snr5_real": float(kept_real / base_real) if base_real else float("nan"),
            "n_snr5_real": int(base_real),
            "flux_abs_error_median": float(np.median(np.abs(err))) if err.size else float("nan"),
            "flux_bias": float(np.median(err)) if err.size else float("nan"), "n_flux": int(err.size),
            "sky_bias": float(np.nanmedian([s.sky_bias for s in per_field]))}


def summarise(name: str, per_field: list[FieldScore], inputs: list[FieldScore], truths: list[FieldScore],
              fields: list[PriorField], refs: list[dict], allowance: int) -> dict:
    """Pooled scores of one method over a group's fields (see the module docstring)."""
    fixed = _fixed_threshold(per_field, inputs, truths, fields, refs)
    if name == TRUTH:  # no background noise: no own-σ or matched-contamination view
        none = ("k_sigma", "false_matched", "completeness", "m50", "m50_isolated", "dm50", "dm50_isolated",
                "false_own_per_mpix", "precision_own", "bkg_sigma_ratio", "s_per_mpix")
        return {**dict.fromkeys(none), **fixed, "n_stars": 0, "n_isolated": 0, "per_setting": {},
                "completeness_curve": {"mag": [], "completeness": []}}
    k, matched = metrics.matched_contamination(
        [s.sub for s in per_field], [f.xy for f in fields], [s.sigma for s in per_field], allowance,
        exclude_xy=[f.artefact_xy for f in fields], radius=MATCH_RADIUS,
        false_radius=[r["false_radius"] for r in refs], near=[r["near"] for r in refs],
        prefiltered=per_field[0].prefiltered)
    def stars(f, r):
        return f.star & (r["snr"] > 0)

    def isolated(f, r):
        return stars(f, r) & r["isolated"]

    every = _depth(matched, fields, refs, stars)
    alone = _depth(matched, fields, refs, isolated)
    per_setting = {}
    for setting in sorted({f.setting for f in fields}):
        idx = [i for i, f in enumerate(fields) if f.setting == setting]
        depth = _depth([matched[i] for i in idx], [fields[i] for i in idx], [refs[i] for i in idx], stars)
        per_setting[setting] = {"m50": depth["m50"], "completeness": depth["completeness"]}
    n_false_own = sum(s.own.n_false for s in per_field)
    tp_own = sum(s.own.true_positives for s in per_field)
    area = sum(f.noisy.size for f in fields) / 1024**2
    mpix = sum(f.noisy.size for f in fields) / 1e6
    return {
        "k_sigma": k, "false_matched": int(sum(d.n_false for d in matched)),
        "completeness": every["completeness"], "n_stars": every["n_stars"], "m50": every["m50"],
        "m50_isolated": alone["m50"], "n_isolated": alone["n_stars"], "per_setting": per_setting,
        **fixed, "false_own_per_mpix": n_false_own / area, "precision_own": tp_own / (tp_own + n_false_own)
        if tp_own + n_false_own else float("nan"),
        "bkg_sigma_ratio": float(np.mean([s.sigma / i.sigma for s, i in zip(per_field, inputs)])),
        "s_per_mpix": None if name in (INPUT, MATCHED_FILTER) else sum(s.seconds for s in per_field) / mpix,
        "completeness_curve": _curve(every["mags"], every["found"])}


def _curve(mags: np.ndarray, found: np.ndarray, width: float = 0.25) -> dict:
    """Completeness in magnitude bins, for the plot."""
    keep = np.isfinite(mags)
    mags, found = mags[keep], found[keep]
    if not mags.size:
        return {"mag": [], "completeness": []}
    edges = np.arange(np.floor(mags.min()), np.ceil(mags.max()) + width, width)
    n, _ = np.histogram(mags, edges)
    k, _ = np.histogram(mags[found], edges)
    use = n >= 5
    return {"mag": (0.5 * (edges[:-1] + edges[1:]))[use].tolist(), "completeness": (k[use] / n[use]).tolist()}


def bench_prior_fields(n_in: int, n_held: int, ratios: list[float], size: int, methods: dict,
                       axes: list[str] | None = None) -> dict:
    """The in-distribution and held-out groups at every ratio: ``{"group r": report}``."""
    report = {}
    for (group, ratio), specs in field_groups(n_in, n_held, ratios, size, axes).items():
        progress(f"star fields, {group}, r = {ratio}: {len(specs)} fields of {size}²")
        report[f"{group}, r = {ratio}"] = bench_group(specs, methods, f"{group} r={ratio}")
    return report


# ----------------------------------------------------------------------------- report
def prior_markdown(report: dict, size: int) -> str:
    parts = []
    for key, group in report.items():
        rows = []
        for name, m in group["methods"].items():
            rows.append([name, fmt(m["k_sigma"], ".3g"), fmt(m["completeness"], ".3f"), fmt(m["m50"], ".2f"),
                         fmt(m["dm50"], "+.2f"), fmt(m["dm50_isolated"], "+.2f"), fmt(m.get("to_limit"), "+.2f"),
                         fmt(m["kept_snr5"], ".3f"),
                         fmt(m.get("kept_snr5_real"), ".3f"), fmt(m["false_own_per_mpix"], ".0f"),
                         fmt(m["precision_own"], ".3f"), fmt(m["flux_abs_error_median"], ".3f"),
                         fmt(m["flux_bias"], "+.3f"), fmt(m["sky_bias"], "+.3f"), fmt(m["bkg_sigma_ratio"], ".3f"),
                         fmt(m["s_per_mpix"], ".2f")])
        n_stars = group["methods"][INPUT]["n_stars"]
        limit = f"; matched-filter limit m50 {group['mf_limit']['m50']:.2f}" if group.get("mf_limit") else ""
        parts += [f"### Star fields, {key} ({group['n_fields']} × {size}², {n_stars} stars; settings: "
                  f"{', '.join(group['settings'])}; ≤ {group['max_false']} false sources at matched contamination"
                  f"{limit})\n",
                  table(["method", "k (own σ)", "completeness", "m50", "Δm50", "Δm50 isolated", "isolated to limit",
                         f"S/N≥{SNR_MIN:g} kept", "of those real", f"false at {OWN_SIGMA:g}σ own / 1024²",
                         f"precision {OWN_SIGMA:g}σ", "med abs ΔF/F", "flux bias", "sky bias (σ)", "bkg σ / input", "s / Mpix"], rows), ""]
        settings = group["settings"]
        if len(settings) > 1:
            rows = [[name] + [fmt(m["per_setting"][a]["dm50"], "+.2f") for a in settings]
                    for name, m in group["methods"].items() if name not in (INPUT, TRUTH)]
            rows.insert(0, [f"{INPUT} (m50)"] + [fmt(group["methods"][INPUT]["per_setting"][a]["m50"], ".2f")
                                                 for a in settings])
            parts += [f"Δm50 per held-out setting, {key} (at the group's matched-contamination threshold):\n",
                      table(["method"] + settings, rows), ""]
    parts.append(
        "*k*: the lowest common multiple of each image's own background σ with at most 5 false sources per "
        f"1024² over the group's area (false: no true source of S/N ≥ {NEAR_SNR:g} within one FWHM; detections on "
        "cosmic rays and hot pixels count neither way); *completeness* of the stars there and *m50*, where it falls "
        "to 50 % (isotonic fit), as a magnitude of the stars' true S/N, -2.5 log10(S/N) (PSF-optimal S/N of the "
        "exposure: fields of any sky, gain "
        "and ratio on one scale); *Δm50* against the noisy input (+ = deeper), *isolated*: stars with no other "
        f"source within 2 FWHM with a tenth of their flux. *{MATCHED_FILTER}*: the noisy input correlated with its "
        "true PSF, detected at its peak without sep's 3×3 filter (here not an upper bound: see the docstring). "
        "*Isolated to limit*: m50 of the isolated stars minus the *matched-filter limit*, the m50 that the local "
        "maxima of the PSF-filtered image reach for isolated point sources of each field's PSF in white noise at the "
        "same false-source allowance (astrotf.metrics.matched_filter_limit; 0 = at the limit, − = shallower). "
        f"*S/N≥{SNR_MIN:g} kept*: of the stars of true S/N ≥ {SNR_MIN:g} that the input "
        f"finds at {FIXED_SIGMA:g} × its background σ, the fraction each image finds at that same threshold; "
        f"*of those real*: the same among the stars that the noise-free truth also finds there (the input finds "
        f"some fainter ones only on an upward noise peak, which no denoiser should keep: *{TRUTH}* shows it). "
        f"*{OWN_SIGMA:g}σ own*: sep at {OWN_SIGMA:g} × each image's own σ. *Flux*: stars found at the fixed "
        f"threshold in input and output, {APERTURE_FWHM:g}-FWHM apertures forced at the true positions against "
        "the noise-free truth's. *Sky bias*: median(output − truth) / σ_in over sky pixels, median over fields.\n")
    return "\n".join(parts)


def prior_plots(report: dict, out, labels: tuple = ()) -> list:
    """Completeness against magnitude (in-distribution, largest ratio) and Δm50 per group and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    keys = [k for k in report if k.startswith("in-distribution")] or list(report)
    if not keys:
        return written
    key = keys[-1]
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for name in (INPUT, MATCHED_FILTER, *labels):
        row = report[key]["methods"].get(name)
        if row:
            curve = row["completeness_curve"]
            ax.plot(curve["mag"], curve["completeness"], lw=1.2, label=f"{name} (m50 {row['m50']:.2f})")
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xlim(right=1.0)  # fainter than S/N 0.4 nothing is found
    ax.set(xlabel="-2.5 log10(true S/N)", ylabel="completeness",
           title=f"completeness at matched contamination, {key}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_png(fig, out / "stars_completeness.png")
    written.append(out / "stars_completeness.png")
    methods = [m for m in report[key]["methods"] if m not in (INPUT, TRUTH)]
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(methods) + 1.6))
    for j, group in enumerate(report):
        values = [report[group]["methods"].get(m, {}).get("dm50", np.nan) for m in methods]
        ax.scatter(values, np.arange(len(methods)) + 0.12 * (j - len(report) / 2), s=14, label=group)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(range(len(methods)), methods, fontsize=7)
    ax.set(xlabel="Δm50 against the noisy input (mag, + = deeper)", title="depth at matched contamination")
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_png(fig, out / "stars_dm50.png")
    written.append(out / "stars_dm50.png")
    return written
