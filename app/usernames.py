"""Usernames that look like other usernames: the two checks that stop one account
passing for another.

Names are shown as typed, in any script, so without these checks "demo" spelled
with a Cyrillic o (U+043E) and "Alpha" with a Greek capital alpha (U+0391)
register beside "demo" and "Alpha", and look exactly like them on every page.
Both checks follow Unicode's rules for identifiers (UTS #39, Unicode Security
Mechanisms), with the data the confusable-homoglyphs package ships: Unicode's
Scripts.txt (which script each character belongs to) and confusables.txt
(which characters look alike).

1. One script per name (`mixes_scripts`). A name uses the letters of one
   script: Latin, Greek, Cyrillic, Arabic, Han... Digits, "_", "." and "-"
   belong to no script (Unicode's "Common"), nor do combining marks
   ("Inherited": they take their letter's), so they go with any. As in UTS
   #39's "Highly Restrictive" level, the scripts that one language writes
   together count as one: Japanese (Han, Hiragana, Katakana), Chinese (Han,
   Bopomofo) and Korean (Han, Hangul), each also with Latin. This check alone
   refuses the two names above, whatever names exist.

2. Not a look-alike of a name someone already has (`lower_skeleton`,
   `upper_skeleton`). A name in one script can still look like another's:
   "pop" spelled in Cyrillic (U+0440 U+043E U+0440) is "pop". Each name gets a
   "skeleton": every character replaced by one fixed member of its group of
   look-alikes (Latin, Greek and Cyrillic small o are one group), so names
   that look alike have equal skeletons, and finding one is a lookup on an
   indexed column (User.username_lower_skeleton). A skeleton is not meant to
   be read: "demo" in capitals gives "DEM0".

How the skeletons are made, and why:

- From the name's key (app.models.name_key: NFKC, then case folded). "Tom" and
  "TOM" are one account, whose owner may change the case at any time, so the
  check must hold for every case of a name, not only the one typed.
- Twice, in small letters and in capitals; two names look alike if either
  pair matches. Cyrillic "pop" looks like "pop" in small letters; Cyrillic
  "TOM" looks like "TOM" only in capitals (its small letters look nothing like
  "tom"), and whoever had it in small letters could switch to capitals at
  will. One skeleton cannot do both: Greek small upsilon looks like "u" and
  its capital like "Y", so a single key would have to make "u" and "y" alike,
  and, through other such letters, half the alphabet. A name in mixed case
  ("Ian" with a capital i, beside "lan") is not compared as typed.
- Digits stay in their groups, as Unicode has them: "0" looks like "O", and
  "1" like "l" and "I". So "dem0" is refused beside "demo" (think "DEM0" and
  "DEMO"), and "a1ice" beside "alice": a name that differs from another only
  by such a digit is most likely imitating it. No two of the letters a to z
  share a group, so names that differ by a letter ("mark" and "mary") are
  never refused as look-alikes, and no more are "alice" and "alicia", "bob"
  and "bobby", "anna" and "ama".
- Character by character. confusables.txt also says "rn" looks like "m";
  such look-alikes of two characters are left out: comparing them would mean
  matching parts of names, not keys.

The skeletons are stored (see User), so they depend on the package's data: a
new version of confusable-homoglyphs may group characters differently, and
upgrading it needs a migration that computes the columns again, as the one
that added them does.
"""

import unicodedata

from confusable_homoglyphs.categories import unique_aliases
from confusable_homoglyphs.confusables import confusables_data

# Script names are spelled as the package spells them: Unicode's, in capitals.
NO_SCRIPT = {"COMMON", "INHERITED"}
SCRIPTS_WRITTEN_TOGETHER = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),  # Japanese
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),  # Chinese
    frozenset({"LATIN", "HAN", "HANGUL"}),  # Korean
)

# The package's data keeps the LEFT-TO-RIGHT MARKs that confusables.txt puts
# around right-to-left letters ("\u200eא\u200e") so that its comments print well.
DIRECTION_MARKS = "\u200e\u200f"


def scripts(name: str) -> set[str]:
    """The scripts of the letters in `name`, leaving out Common and Inherited.

    >>> sorted(scripts("山田たろう_2"))
    ['HAN', 'HIRAGANA']
    """
    return unique_aliases(name) - NO_SCRIPT


def mixes_scripts(name: str) -> bool:
    """Tell whether `name` uses letters of more than one script (Japanese,
    Chinese and Korean count as one each, also with Latin: see the module docstring)."""
    found = scripts(name)
    return len(found) > 1 and not any(found <= together for together in SCRIPTS_WRITTEN_TOGETHER)


def _look_alike_table() -> dict[int, str]:
    """A str.translate() table sending each character that has look-alikes to the
    smallest (by code point) character of its group.

    confusables.txt links each character to its prototype (Cyrillic o to Latin
    o), and a group is everything linked, directly or not (union-find). The smallest
    member is an arbitrary choice, but a fixed one: the same on every run, in
    every process, whatever order the data comes in.
    """
    smallest: dict[str, str] = {}  # union-find: a character's parent, or itself at the top

    def top(char: str) -> str:
        while smallest.setdefault(char, char) != char:
            char = smallest[char]
        return char

    for char, look_alikes in confusables_data.items():
        for look_alike in look_alikes:
            one, other = char.strip(DIRECTION_MARKS), look_alike["c"].strip(DIRECTION_MARKS)
            if len(one) == len(other) == 1:  # single characters only: see the module docstring
                one, other = top(one), top(other)
                smallest[max(one, other)] = min(one, other)
    return {ord(char): top(char) for char in smallest if top(char) != char}


LOOK_ALIKES = _look_alike_table()

# How many times longer than the name a skeleton can be, for a name stored
# NFKC-normalised as the forms store it: "\u1f82" (a Greek alpha with three
# marks) case folds to two characters, is decomposed into four, and the Latin
# "a" that replaces the alpha has no precomposed forms with those marks.
SKELETON_MAX_GROWTH = 4


def skeleton(text: str) -> str:
    """Replace each character of `text` by its group's representative.

    As in UTS #39, the text is decomposed first (NFD), so that a letter with a
    mark matches however it is made: Cyrillic "\u0451" is Cyrillic "\u0435" and
    a diaeresis, which becomes Latin "e" and a diaeresis, like Latin "\u00eb".
    Composed again afterwards (NFC), which keeps it short and compares the same.
    """
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", decomposed.translate(LOOK_ALIKES))


def lower_skeleton(key: str) -> str:
    """What a name looks like in small letters. `key` is the name's app.models.name_key.

    >>> lower_skeleton("\u0440\u043e\u0440") == lower_skeleton("pop")  # Cyrillic, Latin
    True
    """
    return skeleton(key)


def upper_skeleton(key: str) -> str:
    """What a name looks like in capitals. `key` is the name's app.models.name_key.

    >>> upper_skeleton("\u0442\u043e\u043c") == upper_skeleton("tom")  # Cyrillic, Latin
    True
    """
    return skeleton(key.upper())
