"""Person names in free text: the extract's own people in any spelling, and people the extract does not list.

Two sources, one tokenisation. Words are compared in a *folded* form (accents stripped, apostrophes removed,
case folded), so "Zoë O’Brien", "ZOE OBRIEN" and "zoe o'brien" are the same two words.

- Known people: every name the extract gives (the patient, relatives, other patients, staff) plus the nicknames
  of given names (the `nicknames` package's table: William -> Bill, Will, Billy, ...). A known word that is also an
  ordinary word ("Lab", "Rose", "Will") counts only when capitalised and beside another name word, so a staff
  member called "Main Lab" does not erase "lab" from every note.
- Unknown people: the dictionaries of the Philter de-identifier (philter-lite's first- and last-name sets and its
  set of words that are not names, ~195,000 clinical and English words). A capitalised word that is a name there
  and not an ordinary word is a name; one that is both ("Brown", "Bill") only beside another name word or after
  a title. Titles, role labels, signatures and dictation initials ("XGT:holmes") mark names the dictionaries miss.

A name run absorbs initials ("J.", "A") and surname particles (van, de, von, O', ...) between its words.
"""

from __future__ import annotations

import os
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

from nicknames import NickNamer

from tasks.deid.text_common import Span

# a word; an apostrophe inside a name (O'Brien) joins, a possessive or a contraction ('s, 're, 've) does not
WORD = re.compile(r"[^\W\d_]+(?:['’ʼ`][^\W\d_]{3,})*(?:-[^\W\d_]+(?:['’ʼ`][^\W\d_]{3,})*)*")
CREDENTIALS = frozenset({"md", "do", "phd", "rn", "np", "pac", "dds", "dmd", "dvm", "mph", "facp", "facc", "jr", "sr",
                         "ii", "iii", "iv"})
APOSTROPHES = str.maketrans("", "", "'’ʼ`")
PARTICLES = frozenset({"van", "von", "de", "der", "den", "del", "della", "da", "di", "du", "dos", "das", "le", "la",
                       "ten", "ter", "bin", "ibn", "al", "el", "st", "mac", "mc", "y"})
TITLES = frozenset({"dr", "doctor", "prof", "professor", "mr", "mrs", "ms", "miss", "mx", "nurse",
                    "sister", "brother", "mother", "father", "son", "daughter", "wife", "husband", "aunt", "uncle",
                    "cousin", "grandmother", "grandfather", "friend", "neighbor", "neighbour"})
# Words a clinical note capitalises that the name dictionaries also hold (headers, eponyms kept readable).
NOT_NAMES = frozenset({"patient", "history", "plan", "assessment", "impression", "findings", "exam", "chest", "heart",
                       "lungs", "abdomen", "extremities", "neuro", "labs", "lab", "imaging", "report", "note",
                       "clinic", "hospital", "center", "medical", "radiology", "emergency", "department", "unit",
                       "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january",
                       "february", "march", "april", "may", "june", "july", "august", "september", "october",
                       "november", "december", "street", "avenue", "road", "drive", "lane", "the", "and", "with",
                       "without", "for", "per", "see", "seen", "signed", "dictated", "attending", "resident"})
# author initials, then typists' user names: "XGT:holmes", "GPP/church/olinger"
DICTATION = re.compile(r"\b[A-Z]{2,4}[:/]([a-z]{2,}\d*(?:/[a-z]{2,}\d*)*)(?=\s|$)")  # no space: "PMH: none" stays
# a signer's code after the degree: "FILBERT BRIGHT, M.D.    FB59"
PROVIDER_CODE = re.compile(r"(?:M\.D\.|\bMD|\bD\.O\.|\bRN|\bNP)[ \t]+([A-Z]{2,3}\d{1,4})\b")
# a name followed by a medical degree: "FILBERT BRIGHT, M.D.", "Ann Lee MD"
CREDENTIALED = re.compile(r"\b((?:[A-Z][A-Za-z'’-]+\.?[ \t]+){0,2}[A-Z][A-Za-z'’-]+),?[ \t]+"
                          r"(?:M\.D\.|MD|D\.O\.|R\.N\.|RN|NP|PA-C|Ph\.?D\.?|DDS|DMD|DVM|FACP)(?![\w.])")


@lru_cache(maxsize=65_536)
def fold(word: str) -> str:
    """The form names are compared in: no accents, no apostrophes, case folded."""
    if word.isascii():
        return word.translate(APOSTROPHES).lower()
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(APOSTROPHES).casefold()


@lru_cache(maxsize=1)
def dictionaries() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(first names, last names, ordinary words) from philter-lite's sets, folded.

    Parsing the 5.5 MB TOML file takes seconds; the folded words are kept as plain text (one section per set)
    under the user's cache folder ($XDG_CACHE_HOME or ~/.cache, mmfm/), keyed by philter-lite's version, so each
    process after the first reads them in a fraction of a second.
    """
    cache = _cache_dir() / f"philter-lite-{metadata.version('philter-lite')}-names-v1.txt"
    try:
        sections = cache.read_text(encoding="utf-8").split("\n\x1e\n")
        if len(sections) == 3:
            first, last, ordinary = (frozenset(s.split("\n")) for s in sections)
            return first, last, ordinary
    except (OSError, UnicodeDecodeError):
        pass
    with resources.files("philter_lite").joinpath("filters/set.toml").open("rb") as f:
        sets = tomllib.load(f)
    ordinary = frozenset(fold.__wrapped__(w) for w in sets["nonames"] if w) | NOT_NAMES
    first, last = (frozenset(fold.__wrapped__(w) for w in sets[k] if len(w) > 1) for k in ("firstnames", "lastnames"))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text("\n\x1e\n".join("\n".join(sorted(words)) for words in (first, last, ordinary)),
                           encoding="utf-8")
        os.replace(partial, cache)
    except OSError:
        pass  # a read-only home: parse again next time
    return first, last, ordinary


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmfm"


@lru_cache(maxsize=1)
def _nickname_table() -> dict[str, frozenset[str]]:
    """Folded given name -> its nicknames and the names it is a nickname of (both directions)."""
    namer = NickNamer()
    table: dict[str, set[str]] = {}
    for canonical, nicks in namer.nickname_lookup.items():
        for nick in nicks:
            table.setdefault(fold(canonical), set()).add(fold(nick))
            table.setdefault(fold(nick), set()).add(fold(canonical))
    return {k: frozenset(v) for k, v in table.items()}


def known_words(people: Iterable[str], with_nicknames: bool = True) -> frozenset[str]:
    """Folded words of every name given (parts of hyphenated names too), with the nicknames of each."""
    out: set[str] = set()
    for name in people:
        for match in WORD.finditer(name or ""):
            for part in {match[0], *match[0].split("-")}:
                folded = fold(part)
                if len(folded) >= 2 and folded not in PARTICLES:
                    out.add(folded)
    if with_nicknames:
        table = _nickname_table()
        out |= {n for w in list(out) for n in table.get(w, ())}
    return frozenset(out)


def known_phrases(people: Iterable[str]) -> dict[tuple[str, str], tuple[tuple[str, ...], ...]]:
    """Full names of two words or more as folded word sequences, by their first two words: "Main Lab" is a name as a
    whole even though neither word alone is one."""
    out: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    for name in people:
        words = tuple(fold(m[0]) for m in WORD.finditer(name or ""))
        if len(words) >= 2:
            out.setdefault(words[:2], set()).add(words)
    return {k: tuple(v) for k, v in out.items()}


def name_spans(text: str, known: frozenset[str] = frozenset(), known_strict: frozenset[str] = frozenset(),
               phrases: dict[tuple[str, str], tuple[tuple[str, ...], ...]] | None = None) -> Iterator[Span]:
    """[NAME] spans: runs of name words, known (`known`: the patient's and relatives', matched in any case unless
    ordinary; `known_strict`: staff and other patients', matched capitalised; `phrases`: their full names) or found
    by dictionary and context."""
    first, last, ordinary = dictionaries()
    words = [(m.start(), m.end(), m[0], fold(m[0]) if m.end() - m.start() > 1 else m[0].lower())
             for m in WORD.finditer(text)]
    strength = [_strength(text, i, words, first, last, ordinary, known, known_strict) for i in range(len(words))]
    i = 0
    while i < len(words):
        if not _piece(words, strength, i):
            i += 1
            continue
        hi = i
        while hi + 1 < len(words) and _piece(words, strength, hi + 1) and _joins(text, words, hi, hi + 1):
            hi += 1
        core = [k for k in range(i, hi + 1) if strength[k] >= 1]
        names_only = len(core) >= 2 and all(_capitalised(words[k][2]) and (words[k][3] in first or words[k][3] in last)
                                            for k in core)
        if core and (any(strength[k] >= 2 for k in core) or names_only):
            run = range(i, hi + 1)
            start = min((k for k in run if words[k][3] not in TITLES), default=i)
            end = max(k for k in run if strength[k] >= 1 or (_capitalised(words[k][2]) and len(words[k][2]) > 1
                                                              and words[k][3] not in CREDENTIALS))
            yield Span(words[start][0], words[end][1], "NAME", "[NAME]")
        i = hi + 1
    for i in range(len(words) - 1) if phrases else ():
        for phrase in phrases.get((words[i][3], words[i + 1][3]), ()):
            if tuple(w[3] for w in words[i:i + len(phrase)]) == phrase and _capitalised(words[i][2]):
                yield Span(words[i][0], words[i + len(phrase) - 1][1], "NAME", "[NAME]")
    for pattern in (DICTATION, CREDENTIALED, PROVIDER_CODE):
        yield from (Span(m.start(1), m.end(1), "NAME", "[NAME]") for m in pattern.finditer(text))


def _capitalised(word: str) -> bool:
    return word[:1].isupper()


def _strength(text: str, i: int, words: list, first: frozenset[str], last: frozenset[str],
              ordinary: frozenset[str], known: frozenset[str], known_strict: frozenset[str]) -> int:
    """2: a name on its own; 1: a name only beside another name word; 0: not a name."""
    _, _, raw, folded = words[i]
    common = folded in ordinary
    cap = _capitalised(raw)
    if folded in known:  # the patient's and relatives' names: recall first, but "rose" in lower case is a flower
        return 2 if cap or not common else 0
    if folded in known_strict:  # staff and other patients: an ordinary word counts only inside a name run
        return 1 if common else 2
    if not cap or len(folded) < 2 or folded in NOT_NAMES:
        return 0
    if _after_title(text, words, i) or (_after_cue(text, words, i) and (folded in first or not common)):
        return 2
    if folded in first or folded in last:
        if raw.isupper() and len(raw) > 1 and not _after_title(text, words, i):
            return 1  # an acronym until a neighbour says otherwise ("SMITH, JOHN" is two)
        if common and folded in first and _isolated_mid_sentence(text, words, i):
            return 2  # "... called Mary yesterday": a given name capitalised inside a sentence, no header around it
        return 1 if common else 2
    # Philter's rule: a word no dictionary of ordinary words holds is PHI. Here only a capitalised one (not an
    # acronym: those are units, tests and drugs), so a misspelt word in lower case stays.
    return 2 if not common and not raw.isupper() and len(folded) >= 3 else 0


def _isolated_mid_sentence(text: str, words: list, i: int) -> bool:
    """Capitalised inside a sentence (the text before it does not end one), after a lower-case word, and not
    followed by another capitalised word in the same phrase (a header or a title reads "Heart Failure")."""
    before = text[max(0, words[i][0] - 3):words[i][0]].rstrip(" \t")
    if i == 0 or not before or before[-1] in ".!?:\n\"'(*#-" or not words[i - 1][2][:1].islower():
        return False
    return (i + 1 >= len(words) or not _capitalised(words[i + 1][2])
            or bool(text[words[i][1]:words[i + 1][0]].strip(" \t")))


NAME_CUE = re.compile(r"(?:\bname\s+is|\bnamed|\bcalled|\bname\s*[:?])\s*$", re.IGNORECASE)
SPEAKER = re.compile(r"(?:^|\n)[ \t]*$")


def _after_cue(text: str, words: list, i: int) -> bool:
    """The word follows "my name is", "called", "named", "Name:"; or it is a speaker's label at a line start
    ("Mary: ...", only for a given name: "Plan:" is a header)."""
    if NAME_CUE.search(text, max(0, words[i][0] - 14), words[i][0]):
        return True
    return text[words[i][1]:words[i][1] + 1] == ":" and bool(SPEAKER.search(text, max(0, words[i][0] - 8),
                                                                             words[i][0]))


def _after_title(text: str, words: list, i: int) -> bool:
    """The word follows a title ("Dr.", "Mrs", "wife") with only '.', ',' or spaces between."""
    if i == 0:
        return False
    prev = words[i - 1]
    return prev[3] in TITLES and not text[prev[1]:words[i][0]].strip(" .,\t")


def _piece(words: list, strength: list[int], k: int) -> bool:
    """A word that can be part of a name run: a name word, an initial, a surname particle, a credential, or any
    capitalised word that is not a clinical header word (a run is only a name if a name word is in it)."""
    raw, folded = words[k][2], words[k][3]
    return (strength[k] >= 1 or (len(raw) == 1 and raw.isupper()) or folded in PARTICLES
            or (raw[:1].isupper() and (folded in CREDENTIALS or (not raw.isupper() and folded not in NOT_NAMES))))


def _joins(text: str, words: list, a: int, b: int) -> bool:
    """Adjacent words a and b are one name run: only spaces, one comma, or an initial's period between them."""
    gap = text[words[a][1]:words[b][0]]
    if len(gap) > 3 or "\n" in gap or gap.strip(" ,.\t") or (gap.count(",") and gap.count(".")):
        return False
    return "." not in gap or len(words[a][2]) == 1  # "J. Smith" joins; "... Smith. John ..." is two sentences
