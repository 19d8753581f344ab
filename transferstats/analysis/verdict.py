"""The verdict read from the contrast's interval, and the plain-versus-identity comparison.

Every comparative word these sentences use ("exceeds", "agrees", "wider") is computed from the
numbers it compares.
"""

from __future__ import annotations

from scipy import stats

from transferstats.analysis.description import DesignCheck
from transferstats.analysis.members import MemberWords
from transferstats.analysis.result import Comparison, Effect, Verdict

#: More failed resamples than this share and no direction is claimed.
MAX_FAILED_SHARE = 0.05

#: The verdict values, in docs/statistics.md's words.
VERDICTS = {
    "supported": "both vary; the interval of diversity - volume lies above zero",
    "refuted": "both vary; the interval of diversity - volume lies below zero",
    "inconclusive": "both vary; the interval of diversity - volume includes zero, or too many "
                    "bootstrap resamples failed",
    "confounded": "diversity and volume cannot be separated (|r| at or above the threshold), "
                  "neither varies, or fewer than 3 mixes",
    "diversity_only": "only diversity varies (a fixed-budget grid): its effect is estimated, the "
                      "comparison with volume is not possible",
    "volume_only": "only volume varies (e.g. a single-source grid): its effect is estimated, the "
                   "comparison with diversity is not possible",
}

DISAGREEMENT_RULE = ("their verdicts differ or the plain model's diversity estimate lies outside "
                     "the identity-adjusted model's diversity interval")


def minimum_detectable_difference(standard_error: float, level: float, power: float) -> float:
    """Smallest true difference detected with probability ``power`` by a two-sided test at
    1 - ``level``: (z_{1-α/2} + z_{power}) × SE (Cohen 1988; Bloom 1995, "Minimum detectable
    effects")."""
    alpha = 1 - level
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * standard_error)


def _single_factor_reason(check: DesignCheck, effect: Effect | None, failed_share: float) -> str:
    """The reason of a ``diversity_only`` / ``volume_only`` verdict: what varies, the effect with
    its interval, and what the grid cannot answer."""
    varied = check.single_factor
    other = "volume" if varied == "diversity" else "diversity"
    reason = f"{varied} varies, {other} is fixed at {check.fixed_at}"
    if effect is not None and effect.estimated:
        reason += f"; the {varied} effect is {effect.estimate:.2f} {effect.unit}"
        if failed_share > MAX_FAILED_SHARE:
            reason += (f" (its interval [{effect.ci_low:.2f}, {effect.ci_high:.2f}] rests on the "
                       f"{1 - failed_share:.0%} of resamples that could be fitted, "
                       f"{failed_share:.0%} could not: it is not trustworthy)")
        else:
            reason += f" [{effect.ci_low:.2f}, {effect.ci_high:.2f}]"
    return reason + f"; comparing it with {other} needs mixes that vary both"


def decide(comparison: Comparison, check: DesignCheck, failed_share: float = 0.0,
           effects: tuple[Effect, ...] = ()) -> Verdict:
    """The verdict (one of :data:`VERDICTS`) and a one-sentence reason.

    A grid that varies only one factor gets ``diversity_only`` or ``volume_only`` whatever its
    estimate: it cannot answer the comparison, and its reason quotes the effect it can estimate.
    When more than ``MAX_FAILED_SHARE`` of the bootstrap resamples cannot be fitted (too few
    mixes or languages to resample), the intervals are conditional on the lucky resamples, so
    no direction is claimed.
    """
    if check.confounded:
        return Verdict("confounded", check.reason)
    varied = check.single_factor
    if varied:
        effect = next((e for e in effects if e.term == varied), None)
        return Verdict(f"{varied}_only", _single_factor_reason(check, effect, failed_share))
    if failed_share > MAX_FAILED_SHARE:
        return Verdict("inconclusive", f"{failed_share:.0%} of the bootstrap resamples could not "
                                       "be fitted (too few mixes or languages to resample), so "
                                       "the intervals are not trustworthy; the grid needs more "
                                       "mixes")
    low, high = comparison.ci_low, comparison.ci_high
    if low is None or high is None:
        return Verdict("inconclusive", "the interval of the difference could not be computed "
                                       "(too few resamples or degrees of freedom); the grid needs "
                                       "more mixes")
    interval = f"[{low:.2f}, {high:.2f}]"
    if low > 0:
        return Verdict("supported", "diversity's benefit exceeds volume's: the interval of the "
                                    f"difference {interval} lies above zero")
    if high < 0:
        return Verdict("refuted", "volume's benefit exceeds diversity's: the interval of the "
                                  f"difference {interval} lies below zero")
    detectable = comparison.minimum_detectable_difference
    tail = (f"; the grid could detect a difference of {detectable:.2f} points with the stated "
            "power" if detectable is not None else "")
    return Verdict("inconclusive", f"the interval of the difference {interval} includes zero"
                                   + tail)


def compare_models(primary: tuple[Effect, ...], verdict: Verdict, plain: tuple[Effect, ...],
                   plain_verdict: Verdict, direction: float, words: MemberWords) -> dict:
    """Whether the plain model (no identity effects) and the primary one disagree, and a sentence.

    They *disagree* when their verdicts differ, or when the plain model's diversity estimate
    lies outside the primary model's diversity interval (in a grid where only volume varies:
    its volume estimate and interval). Which story the sentence tells:

    - the plain estimate lies beyond the primary interval on the side of benefit: the apparent
      diversity effect is *explained by composition* (which members the mixes contain);
    - it lies beyond on the other side: composition was *hiding* part of the diversity effect;
    - it lies inside (only the verdicts differ): the two estimates agree and the verdicts part;
      the sentence says which interval is wider, as measured.
    """
    term = "diversity" if any(e.term == "diversity" for e in primary) else "volume"
    first = next(e for e in primary if e.term == term)
    other = next(e for e in plain if e.term == term)
    assert None not in (first.estimate, first.ci_low, first.ci_high, other.estimate,
                        other.ci_low, other.ci_high), "both models were fitted"
    low, high = float(first.ci_low), float(first.ci_high)  # type: ignore[arg-type]
    estimate = float(other.estimate)  # type: ignore[arg-type]
    outside = estimate < low or estimate > high
    disagrees = bool(outside or plain_verdict.value != verdict.value)
    explained = outside and direction * estimate > max(direction * low, direction * high)
    numbers = (f"the plain model gives {term} {estimate:.2f} [{other.ci_low:.2f}, "
               f"{other.ci_high:.2f}] and verdict {plain_verdict.value}, the model with "
               f"{words.noun} identity effects {first.estimate:.2f} [{low:.2f}, {high:.2f}] and "
               f"verdict {verdict.value}")
    if not disagrees:
        sentence = f"The plain model agrees with the identity-adjusted one: {numbers}."
    elif explained:
        sentence = (f"The apparent {term} effect is explained by which {words.plural} the "
                    f"mixes contain: {numbers}.")
    elif outside:
        sentence = (f"Which {words.plural} the mixes contain hides part of the {term} effect: "
                    f"{numbers}.")
    else:
        sentence = (f"The verdicts differ, but not because of composition: {numbers}; the plain "
                    "estimate lies inside the identity-adjusted interval"
                    + _width_clause(high - low, float(other.ci_high)  # type: ignore[arg-type]
                                    - float(other.ci_low)) + ".")  # type: ignore[arg-type]
    return {"disagrees": disagrees, "explained_by_composition": bool(explained),
            "disagreement_rule": DISAGREEMENT_RULE.replace("diversity", term),
            "sentence": sentence}


def _width_clause(identity_width: float, plain_width: float) -> str:
    """How the two intervals' widths compare, as measured."""
    if identity_width > plain_width:
        return (f", which is wider ({identity_width:.2f} against {plain_width:.2f}) because the "
                "identity effects are estimated too")
    return (f", which is narrower ({identity_width:.2f} against {plain_width:.2f}): the plain "
            "model's interval carries the variation between mixes that the identity effects "
            "explain")
