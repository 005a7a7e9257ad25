"""Hospital sites of a synthetic cohort: scanners, reporting habits, units and demographics differ per site.

Site effects are nuisance variation a model must be robust to (and that monitoring must notice when it drifts):
intensity scale/offset, noise and blur of the scanner, pixel spacing, transfer syntax, note style, lab units.
`shifted=True` is the domain-shift knob (`mmfm synth --shift SITE`): a new scanner and an older population.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydicom.uid import ExplicitVRLittleEndian, RLELossless

_PROFILES = (
    dict(institution="Northfield General Hospital", city="Northfield", manufacturer="GE MEDICAL SYSTEMS",
         model="Revolution EVO", intensity_scale=1.00, intensity_offset=0.0, noise_sd=8.0, blur_sigma=0.6,
         cxr_spacing=2.8, ct_spacing=5.5, ct_thickness=10.0, transfer_syntax=ExplicitVRLittleEndian,
         note_style="soap", units={}),
    dict(institution="St. Brigid University Medical Center", city="Kilbride", manufacturer="SIEMENS",
         model="SOMATOM Definition AS", intensity_scale=0.85, intensity_offset=40.0, noise_sd=12.0, blur_sigma=1.0,
         cxr_spacing=3.0, ct_spacing=6.0, ct_thickness=8.0, transfer_syntax=RLELossless,
         note_style="narrative", units={"crp": "mg/dL", "temperature": "[degF]"}),
    dict(institution="Lakeside Regional Clinic", city="Lakeside", manufacturer="Philips", model="Ingenuity CT",
         intensity_scale=1.15, intensity_offset=-30.0, noise_sd=6.0, blur_sigma=0.4, cxr_spacing=2.6,
         ct_spacing=5.0, ct_thickness=10.0, transfer_syntax=ExplicitVRLittleEndian, note_style="terse",
         units={"ddimer": "ug/mL", "wbc": "10*9/L"}),
    dict(institution="Harbor View Community Hospital", city="Harbor View", manufacturer="Canon Medical Systems",
         model="Aquilion ONE", intensity_scale=0.95, intensity_offset=15.0, noise_sd=10.0, blur_sigma=0.8,
         cxr_spacing=2.9, ct_spacing=5.8, ct_thickness=9.0, transfer_syntax=RLELossless, note_style="soap",
         units={"ntprobnp": "ng/L"}),
)


@dataclass(frozen=True)
class Site:
    key: str  # "site-a": the extract's origin, known to the platform (not PHI)
    institution: str  # PHI-bearing in DICOM (InstitutionName is removed by the basic profile)
    city: str
    manufacturer: str
    model: str
    intensity_scale: float
    intensity_offset: float
    noise_sd: float
    blur_sigma: float
    cxr_spacing: float  # mm per pixel of the radiograph
    ct_spacing: float  # mm per pixel in-plane
    ct_thickness: float  # mm between slices
    transfer_syntax: str
    note_style: str  # "soap" | "narrative" | "terse"
    units: dict[str, str] = field(default_factory=dict)  # lab key -> unit this site reports in
    age_shift: float = 0.0
    shifted: bool = False


def make_sites(n: int, shift: str | None = None) -> list[Site]:
    """`n` sites named site-a, site-b, ...; profiles repeat with small changes past the fourth."""
    sites = []
    for i in range(n):
        prof = dict(_PROFILES[i % len(_PROFILES)])
        if i >= len(_PROFILES):
            prof["institution"] = f"{prof['institution']} Campus {i // len(_PROFILES) + 1}"
            prof["intensity_offset"] += 10.0 * (i // len(_PROFILES))
        sites.append(Site(key=f"site-{chr(ord('a') + i)}", **prof))
    if shift is not None:
        keys = [s.key for s in sites]
        if shift not in keys:
            raise ValueError(f"--shift {shift!r} is not one of the sites {keys}")
        sites = [shifted(s) if s.key == shift else s for s in sites]
    return sites


def shifted(site: Site) -> Site:
    """A site after a scanner replacement and a change of catchment: brighter, noisier, blurrier, older."""
    return replace(site, model=f"{site.model} (upgraded)", intensity_scale=site.intensity_scale * 1.35,
                   intensity_offset=site.intensity_offset + 120.0, noise_sd=site.noise_sd * 2.0,
                   blur_sigma=site.blur_sigma + 1.0, age_shift=12.0, shifted=True)
