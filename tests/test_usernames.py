"""Usernames that look like other usernames (app/usernames.py, app/forms.py).

What is pinned here, and why it matters to a user:

- A name may not mix scripts: "demo" with a Cyrillic o, "Alpha" with a Greek
  capital alpha are refused, even when nobody has "demo" or "Alpha". Chinese,
  Japanese (kanji with kana) and Korean (hangul with hanja) names, and names
  in any one script, with digits, ".", "-" and "_", are accepted.
- A name may not look like one someone already has: "pop" spelled in Cyrillic
  beside "pop", in either order, and "tom" spelled in Cyrillic beside "TOM"
  (in capitals the two look the same, and case can be changed at will).
  Names that merely resemble each other ("alice" and "alicia") are both fine.
- Editing your profile: you may keep your name (even one registered before
  these rules) and rename yourself to a look-alike of your own name, but not
  to a look-alike of someone else's.
- Hostile input in the username field (combining marks, invisible joiners,
  bidi controls, variation selectors, emoji) ends in a form error or a clean
  success, never a 500; and under gunicorn with the production config, CSRF
  token and all, the messages are what a person sees.
- The columns that make the lookup possible are filled by every way a user
  row is written (the forms, `flask seed`'s bulk INSERT, the migration for
  users who were there before), with the values the forms compare.

Look-alike letters are written as escapes ("dem\\u043e"): on the screen they
are, by design, impossible to tell apart.
"""

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, func, inspect, select, text

from app.extensions import db
from app.models import USERNAME_MAX_LENGTH, User, name_key
from app.usernames import (
    LOOK_ALIKES,
    SKELETON_MAX_GROWTH,
    lower_skeleton,
    mixes_scripts,
    scripts,
    upper_skeleton,
)
from tests.databases import fresh_database
from tests.helpers import AuthActions, add_user, app_at_revision
from tests.pages import form_errors
from tests.servers import Browser, production_env, run_gunicorn

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
ROOT = MIGRATIONS.parent
# The revision before the skeleton columns.
BEFORE_SKELETONS = "8c4f1e2a7b90"

USERNAME_TAKEN = "Please use a different username."
MIXES_SCRIPTS = "Use letters from one writing system only, not a mix such as Latin and Cyrillic."
LOOKS_TAKEN = "This username looks too much like an existing one. Please use a different username."
WRONG_CHARACTERS = "Use only letters, digits, dots, dashes and underscores."
WRONG_LENGTH = "Field must be between 3 and 64 characters long."

# The look-alikes, spelled out.
DEMO_CYRILLIC_O = "dem\u043e"  # the last letter is U+043E CYRILLIC SMALL LETTER O
ALPHA_GREEK_A = "\u0391lpha"  # the first letter is U+0391 GREEK CAPITAL LETTER ALPHA
POP_CYRILLIC = "\u0440\u043e\u0440"  # all Cyrillic: er, o, er
TOM_CYRILLIC = "\u0442\u043e\u043c"  # all Cyrillic: te, o, em (in capitals, "TOM")

# Names of one script, or of the scripts one language writes together.
ACCEPTED = [
    "Ωμέγα",  # Greek
    "Дмитрий",  # Cyrillic
    "محمد",  # Arabic
    "李小龙",  # Chinese
    "山田たろう",  # Japanese: kanji and hiragana
    "やまだタロウ",  # Japanese: hiragana and katakana
    "ラーメン屋",  # katakana, the long-vowel mark (no script) and a kanji
    "김민수",  # Korean, hangul
    "金민수",  # Korean, a hanja and hangul
    "tanaka山田",  # Latin with kanji
    "user_1.x-y",  # Latin with digits, dot, dash, underscore
    "Émile",
]


def count_users(app, username: str | None = None) -> int:
    """How many users the database holds (with exactly this username, if given)."""
    with app.app_context():
        query = select(func.count()).select_from(User)
        if username is not None:
            query = query.where(User.username == username)
        return db.session.scalar(query)


def register(auth, username: str, number: int = 0):
    """Register `username` through the form, with an address of its own."""
    return auth.register(username=username, email=f"person{number}@example.com")


def looks_alike(one: str, other: str) -> bool:
    """Whether the forms count two names as look-alikes: a skeleton in common."""
    one, other = name_key(one), name_key(other)
    same_small = lower_skeleton(one) == lower_skeleton(other)
    return same_small or upper_skeleton(one) == upper_skeleton(other)


# --- Scripts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "found", "mixed"),
    [
        ("demo", {"LATIN"}, False),
        (DEMO_CYRILLIC_O, {"LATIN", "CYRILLIC"}, True),
        (ALPHA_GREEK_A, {"LATIN", "GREEK"}, True),
        (POP_CYRILLIC, {"CYRILLIC"}, False),
        ("Ωμέγα", {"GREEK"}, False),
        ("محمد", {"ARABIC"}, False),
        ("١٢٣", {"ARABIC"}, False),  # Arabic-Indic digits belong to Arabic
        ("user\u0661\u0662\u0663", {"LATIN", "ARABIC"}, True),  # with Arabic-Indic digits
        ("_.-123", set(), False),  # no letter, no script: nothing to mix
        ("李小龙", {"HAN"}, False),
        ("山田たろう", {"HAN", "HIRAGANA"}, False),
        ("やまだタロウ", {"HIRAGANA", "KATAKANA"}, False),
        ("山田タロウたろう", {"HAN", "HIRAGANA", "KATAKANA"}, False),
        ("ラーメン", {"KATAKANA"}, False),  # the long-vowel mark "ー" is of no script
        ("ㄅㄆ李", {"BOPOMOFO", "HAN"}, False),
        ("金민수", {"HAN", "HANGUL"}, False),
        ("tanaka山田", {"LATIN", "HAN"}, False),
        ("kim김", {"LATIN", "HANGUL"}, False),
        ("hiro広たろう", {"LATIN", "HAN", "HIRAGANA"}, False),
        ("김たろう", {"HANGUL", "HIRAGANA"}, True),  # Korean and Japanese are two
        ("ㄅあ", {"BOPOMOFO", "HIRAGANA"}, True),
        ("李김ア", {"HAN", "HANGUL", "KATAKANA"}, True),
        ("ㄅ김", {"BOPOMOFO", "HANGUL"}, True),
        ("abc\u03b1\u03b2\u03b3", {"LATIN", "GREEK"}, True),
    ],
)
def test_scripts_and_which_mixes_are_refused(name, found, mixed):
    assert scripts(name) == found
    assert mixes_scripts(name) is mixed


# --- Skeletons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "lower", "upper"),
    [
        ("demo", "demo", "DEM0"),
        (DEMO_CYRILLIC_O, "demo", "DEM0"),
        ("DEMO", "demo", "DEM0"),  # the same name in another case: the same skeletons
        ("dem0", "dem0", "DEM0"),
        ("Alpha", "a1pha", "ALPHA"),
        (ALPHA_GREEK_A, "a1pha", "ALPHA"),
        ("pop", "pop", "P0P"),
        (POP_CYRILLIC, "pop", "P0P"),
        ("tom", "tom", "T0M"),
        (TOM_CYRILLIC, "\u03c4o\u028d", "T0M"),  # small Cyrillic te, em: Greek tau, turned m
        ("po\u00eb", "po\u00eb", "P0\u00cb"),  # Latin e with diaeresis...
        ("\u0440\u043e\u0451", "po\u00eb", "P0\u00cb"),  # ...and Cyrillic io: the same
        ("alice", "a1ice", "AL1CE"),
        ("李小龙", "李\u2f29\u2ef0", "李\u2f29\u2ef0"),  # 小 and 龙 look like radicals
    ],
)
def test_skeletons(name, lower, upper):
    """Exact values: they are stored, so a change here needs a migration."""
    key = name_key(name)
    assert (lower_skeleton(key), upper_skeleton(key)) == (lower, upper)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("demo", DEMO_CYRILLIC_O),
        ("Alpha", ALPHA_GREEK_A),
        ("pop", POP_CYRILLIC),
        ("POP", POP_CYRILLIC),
        ("tom", TOM_CYRILLIC),  # in capitals
        ("TOM", TOM_CYRILLIC.upper()),
        ("demo", "dem0"),  # a digit zero for an o
        ("DEMO", "dem0"),
        ("alice", "a1ice"),  # a digit one for an l
        ("user1", "useri"),  # ...and for a capital i: USER1, USERI
        ("user1", "userl"),
        ("力也", "カ也"),  # a kanji and a katakana
        ("口田", "ロ田"),
        ("一郎", "ー郎"),  # the kanji for one, the long-vowel mark
        ("へいわ", "ヘいわ"),  # hiragana he, katakana he
    ],
)
def test_look_alikes_share_a_skeleton_both_ways(one, other):
    assert looks_alike(one, other)
    assert looks_alike(other, one)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("alice", "alicia"),
        ("bob", "bobby"),
        ("anna", "ama"),
        ("mark", "mary"),
        ("ian", "lan"),  # in small letters, i and l; in capitals, I and L
        ("useri", "userl"),  # both look like user1, but not like each other
        ("corn", "com"),  # "rn" for "m" is two characters: not compared
        ("李小龙", "李小虎"),
        ("山田", "山口"),
    ],
)
def test_names_that_only_resemble_each_other_are_distinct(one, other):
    assert not looks_alike(one, other)
    assert not looks_alike(other, one)


def test_no_two_letters_a_to_z_look_alike():
    """So names that differ by a letter are never refused as look-alikes."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    assert len({lower_skeleton(letter) for letter in letters}) == 26
    assert len({upper_skeleton(letter) for letter in letters}) == 26


@pytest.mark.system
def test_skeletons_are_the_same_in_every_process():
    """The table is built when the module is imported: another process, whose
    string hashes differ (PYTHONHASHSEED), must build the same, or stored
    skeletons would stop matching after a restart."""
    script = "from app.usernames import LOOK_ALIKES; print(sorted(LOOK_ALIKES.items()))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": randomization},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for randomization in ("1", "2")
    }
    assert outputs == {f"{sorted(LOOK_ALIKES.items())}\n"}


def test_skeletons_fit_their_columns():
    """No character of a stored (NFKC) name gives more than SKELETON_MAX_GROWTH
    characters of skeleton, so the skeleton of a name that fits its column fits
    the skeleton columns: PostgreSQL would refuse a longer one with an error."""
    growth = 0
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.normalize("NFKC", char) == char:
            key = name_key(char)
            growth = max(growth, len(lower_skeleton(key)), len(upper_skeleton(key)))
    assert growth == SKELETON_MAX_GROWTH
    for column in (User.username_lower_skeleton, User.username_upper_skeleton):
        assert column.type.length == SKELETON_MAX_GROWTH * USERNAME_MAX_LENGTH


def test_the_longest_skeleton_is_stored(app, auth):
    """A name of 64 of the letters that grow most registers, on PostgreSQL too."""
    name = "\u1f82" * USERNAME_MAX_LENGTH  # Greek alpha with psili, varia, ypogegrammeni
    assert register(auth, name).headers["Location"] == "/auth/login"
    with app.app_context():
        user = db.session.scalar(User.select_by_username(name))
        assert len(user.username_lower_skeleton) == SKELETON_MAX_GROWTH * USERNAME_MAX_LENGTH


# --- Registering --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ("demo", DEMO_CYRILLIC_O, MIXES_SCRIPTS),
        ("Alpha", ALPHA_GREEK_A, MIXES_SCRIPTS),
        ("pop", POP_CYRILLIC, LOOKS_TAKEN),
        (POP_CYRILLIC, "pop", LOOKS_TAKEN),
        ("TOM", TOM_CYRILLIC, LOOKS_TAKEN),
        (TOM_CYRILLIC, "Tom", LOOKS_TAKEN),
        ("demo", "dem0", LOOKS_TAKEN),
        ("DEM0", "demo", LOOKS_TAKEN),
        ("alice", "a1ice", LOOKS_TAKEN),
        ("山口花", "山ロ花", LOOKS_TAKEN),  # a kanji and a katakana
        ("demo", "DEMO", USERNAME_TAKEN),  # the same name: the message it always had
    ],
)
def test_register_refuses_a_look_alike(app, auth, first, second, message):
    assert register(auth, first, 1).headers["Location"] == "/auth/login"
    response = register(auth, second, 2)
    assert response.status_code == 200
    assert form_errors(response) == {"username": [message]}
    assert count_users(app) == 1
    assert count_users(app, first) == 1


@pytest.mark.parametrize("name", [DEMO_CYRILLIC_O, ALPHA_GREEK_A, "tanaka\u0442\u043e\u043c"])
def test_register_refuses_mixed_scripts_even_with_no_one_to_imitate(app, auth, name):
    response = register(auth, name)
    assert response.status_code == 200
    assert form_errors(response) == {"username": [MIXES_SCRIPTS]}
    assert count_users(app) == 0


@pytest.mark.parametrize("name", ACCEPTED)
def test_register_accepts_names_of_one_script(app, auth, name):
    response = register(auth, name)
    assert response.headers["Location"] == "/auth/login"
    assert count_users(app, name) == 1


def test_register_accepts_names_that_only_resemble_others(make_app):
    app = make_app(REGISTRATION_RATE_LIMIT="100 per minute")  # ten registrations
    auth = AuthActions(app.test_client())
    names = ["alice", "alicia", "bob", "bobby", "anna", "ama", "ian", "lan", "Дмитрий", "Dmitry"]
    for number, name in enumerate(names):
        assert register(auth, name, number).headers["Location"] == "/auth/login", name
    assert count_users(app) == len(names)


def test_a_user_inserted_without_the_orm_is_seen_by_the_forms(app, auth):
    """A row written with a Core INSERT (as `flask seed` and the race tests do)
    gets its skeletons from the column defaults, so the forms still see it."""
    with app.app_context():
        db.session.execute(
            User.__table__.insert().values(
                username="pop",
                username_key="pop",
                email="pop@example.com",
                email_key="pop@example.com",
                password_hash="x",
            )
        )
        db.session.commit()
        row = db.session.execute(
            select(User.username_lower_skeleton, User.username_upper_skeleton)
        ).one()
        assert tuple(row) == ("pop", "P0P")
    assert form_errors(register(auth, POP_CYRILLIC)) == {"username": [LOOKS_TAKEN]}


# --- Editing the profile ------------------------------------------------------------------


@pytest.fixture
def pop(app, auth):
    """A user "pop" (password PASSWORD), logged in; also a user "demo"."""
    with app.app_context():
        pop_id = add_user("pop").id
        add_user("demo")
    auth.login("pop")
    return pop_id


def rename(client, username: str, about_me: str = "renamed?"):
    return client.post("/edit_profile", data={"username": username, "about_me": about_me})


def stored_name(app, user_id: int) -> str:
    with app.app_context():
        return db.session.get(User, user_id).username


@pytest.mark.parametrize(
    "new_name",
    [
        "pop",
        "POP",  # changing the case
        POP_CYRILLIC,  # a look-alike of your own name
        POP_CYRILLIC.upper(),
        "p0p",
        "poppy",  # a different name altogether
    ],
)
def test_rename_to_your_own_name_or_a_look_alike_of_it(app, client, pop, new_name):
    response = rename(client, new_name)
    assert response.headers["Location"] == "/edit_profile"
    assert stored_name(app, pop) == new_name


@pytest.mark.parametrize(
    ("new_name", "message"),
    [
        (DEMO_CYRILLIC_O, MIXES_SCRIPTS),
        ("dem0", LOOKS_TAKEN),
        ("DEM0", LOOKS_TAKEN),
        ("demo", USERNAME_TAKEN),
        ("po\u0440", MIXES_SCRIPTS),  # your own name, but spelled in two scripts
    ],
)
def test_rename_to_a_mix_or_to_someone_elses_look_alike_is_refused(
    app, client, pop, new_name, message
):
    response = rename(client, new_name)
    assert response.status_code == 200
    assert form_errors(response) == {"username": [message]}
    assert stored_name(app, pop) == "pop"


def test_names_from_before_the_rules_can_still_save_their_profile(app, client, auth):
    """A database may hold a mixed-script name, and a pair of look-alikes, from before
    these rules: their owners keep their names and can still edit their profiles."""
    with app.app_context():
        add_user("demo")
        add_user(DEMO_CYRILLIC_O, email="legacy@example.com")
        add_user(POP_CYRILLIC, email="legacy-pop@example.com")
        add_user("pop")
    for name in ("demo", DEMO_CYRILLIC_O, POP_CYRILLIC, "pop"):
        auth.login(name)
        response = rename(client, name.upper(), about_me=f"still {name}")
        assert response.headers["Location"] == "/edit_profile", name
        auth.logout()
    with app.app_context():
        rows = db.session.execute(select(User.username, User.about_me).order_by(User.id)).all()
    assert [tuple(row) for row in rows] == [
        ("DEMO", "still demo"),
        (DEMO_CYRILLIC_O.upper(), f"still {DEMO_CYRILLIC_O}"),
        (POP_CYRILLIC.upper(), f"still {POP_CYRILLIC}"),
        ("POP", "still pop"),
    ]


# --- Hostile input ------------------------------------------------------------------------

# (what is typed, the errors shown: [] means accepted)
HOSTILE = [
    ("de\u0301\u0301mo", [WRONG_CHARACTERS]),  # a second accent, left over after NFKC
    ("\u0301\u0301\u0301", [WRONG_CHARACTERS]),  # accents with no letter
    ("dem\u043e\u0301", [WRONG_CHARACTERS]),  # a Cyrillic o with an accent: no composed form
    ("demo\u0301", []),  # composes into "demó": a name of its own
    ("ab\u200dcd", [WRONG_CHARACTERS]),  # zero-width joiner
    ("ab\u200ccd", [WRONG_CHARACTERS]),  # zero-width non-joiner
    ("\u202eomed", [WRONG_CHARACTERS]),  # right-to-left override
    ("\u2067demo\u2069", [WRONG_CHARACTERS]),  # right-to-left isolate
    ("demo\u200f", [WRONG_CHARACTERS]),  # right-to-left mark
    ("demo\ufe0f", [WRONG_CHARACTERS]),  # variation selector 16
    ("demo\U000e0100", [WRONG_CHARACTERS]),  # variation selector 17
    ("\U0001f600\U0001f600\U0001f600", [WRONG_CHARACTERS]),  # emoji
    ("demo\U0001f600", [WRONG_CHARACTERS]),
    ("\U0001f468\u200d\U0001f469\u200d\U0001f467", [WRONG_CHARACTERS]),  # a family of emoji
    ("a" * 32 + "\u0430" * 32, [MIXES_SCRIPTS]),  # 64 characters, Latin and Cyrillic
    ("a\u03b1\u0430" * 21 + "a", [MIXES_SCRIPTS]),  # 64: Latin, Greek, Cyrillic in turn
    ("a" * 33 + "\u0430" * 32, [WRONG_LENGTH]),  # 65: one message, the first
    ("a\u0430" * 5000, [WRONG_LENGTH]),
    ("\uff44\uff45\uff4d\uff4f", [USERNAME_TAKEN]),  # full-width "demo" is "demo"
    ("\U0001d41d\U0001d41e\U0001d426\U0001d428", [USERNAME_TAKEN]),  # mathematical bold
    ("\U0001d41d\U0001d41e\U0001d426\u043e", [MIXES_SCRIPTS]),  # bold Latin, Cyrillic o
    ("\u1100\u1161\u11a8" * 3, []),  # hangul typed as letters: composed, "각각각"
    ("\u304b\u3099\u304d\u304f", []),  # a kana and a separate voicing mark: "がきく"
]


@pytest.mark.parametrize(("typed", "errors"), HOSTILE)
def test_hostile_names_when_registering(app, auth, typed, errors):
    with app.app_context():
        add_user("demo")
    response = register(auth, typed, 1)
    if errors:
        assert response.status_code == 200
        assert form_errors(response) == {"username": errors}
        assert count_users(app) == 1
    else:
        assert response.headers["Location"] == "/auth/login"
        assert count_users(app, unicodedata.normalize("NFKC", typed)) == 1


@pytest.mark.parametrize(("typed", "errors"), HOSTILE)
def test_hostile_names_when_renaming(app, client, pop, typed, errors):
    response = rename(client, typed)
    if errors:
        assert response.status_code == 200
        assert form_errors(response) == {"username": errors}
        assert stored_name(app, pop) == "pop"
    else:
        assert response.headers["Location"] == "/edit_profile"
        assert stored_name(app, pop) == unicodedata.normalize("NFKC", typed)


# --- Every way a user is written fills the skeletons ---------------------------------------


def test_flask_seed_fills_the_skeletons(app, runner):
    """`flask seed` inserts users in bulk, past the ORM's `_store_keys`; its demo
    names (alice1, bob1... alice12...) don't look like one another."""
    result = runner.invoke(args=["seed", "--users", "300", "--posts", "0", "--follows", "0"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        rows = db.session.execute(
            select(User.username, User.username_lower_skeleton, User.username_upper_skeleton)
        ).all()
    assert len(rows) == 300
    assert len({lower for _, lower, _ in rows}) == len({upper for _, _, upper in rows}) == 300
    assert ("demo", "demo", "DEM0") in rows
    assert ("alice1", "a1ice1", "AL1CE1") in rows
    for username, lower, upper in rows:
        assert (lower, upper) == (
            lower_skeleton(name_key(username)),
            upper_skeleton(name_key(username)),
        )


def test_a_rename_updates_the_skeletons(app):
    with app.app_context():
        user = add_user("pop")
        user.username = "Tom"
        db.session.commit()
        db.session.remove()
        row = db.session.execute(
            select(User.username_lower_skeleton, User.username_upper_skeleton)
        ).one()
    assert tuple(row) == ("tom", "T0M")


@pytest.fixture
def old_app(tmp_path):
    """An app on a new database migrated only up to BEFORE_SKELETONS."""
    with app_at_revision(tmp_path, BEFORE_SKELETONS) as app:
        yield app


def insert_the_old_way(username: str) -> None:
    """Insert a user with plain SQL, as the app did before the skeleton columns."""
    email = f"{name_key(username)}@example.com"
    db.session.execute(
        text(
            'INSERT INTO "user" (username, username_key, email, email_key, password_hash,'
            " about_me, last_seen, created) VALUES (:username, :key, :email, :email, 'x', '',"
            " '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        ),
        {"username": username, "key": name_key(username), "email": email},
    )
    db.session.commit()


def skeleton_indexes() -> dict[str, tuple[list[str], bool]]:
    """The indexes on the skeleton columns: {name: (columns, unique)}."""
    return {
        index["name"]: (index["column_names"], bool(index["unique"]))
        for index in inspect(db.engine).get_indexes("user")
        if "skeleton" in index["name"]
    }


def test_upgrade_fills_the_skeletons_and_keeps_look_alikes(old_app):
    """Users already there get their skeletons, look-alike pairs included: the
    upgrade keeps them (the index is not unique), and the forms know about them."""
    names = ["demo", DEMO_CYRILLIC_O, "pop", POP_CYRILLIC, "Émile"]
    with old_app.app_context():
        for name in names:
            insert_the_old_way(name)
        upgrade(directory=str(MIGRATIONS))
        db.session.remove()
        rows = db.session.execute(
            select(
                User.username, User.username_lower_skeleton, User.username_upper_skeleton
            ).order_by(User.id)
        ).all()
        assert [tuple(row) for row in rows] == [
            ("demo", "demo", "DEM0"),
            (DEMO_CYRILLIC_O, "demo", "DEM0"),
            ("pop", "pop", "P0P"),
            (POP_CYRILLIC, "pop", "P0P"),
            ("Émile", "\u00e9mi1e", "\u00c9M1LE"),
        ]
        columns = {column["name"]: column for column in inspect(db.engine).get_columns("user")}
        for name in ("username_lower_skeleton", "username_upper_skeleton"):
            assert columns[name]["nullable"] is False
        assert skeleton_indexes() == {
            "ix_user_username_lower_skeleton": (["username_lower_skeleton"], False),
            "ix_user_username_upper_skeleton": (["username_upper_skeleton"], False),
        }


def test_downgrade_then_upgrade_again(old_app):
    with old_app.app_context():
        insert_the_old_way("pop")
        upgrade(directory=str(MIGRATIONS))
        downgrade(directory=str(MIGRATIONS), revision=BEFORE_SKELETONS)
        db.session.remove()
        columns = {column["name"] for column in inspect(db.engine).get_columns("user")}
        assert "username_lower_skeleton" not in columns
        assert "username_upper_skeleton" not in columns
        assert skeleton_indexes() == {}

        upgrade(directory=str(MIGRATIONS))
        db.session.remove()
        row = db.session.execute(
            select(User.username_lower_skeleton, User.username_upper_skeleton)
        ).one()
        assert tuple(row) == ("pop", "P0P")


# --- Under gunicorn, as deployed ----------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn with the production config on a database of its own; yields
    (its URL, an engine on its database)."""
    tmp_path = tmp_path_factory.mktemp("usernames")
    with fresh_database(tmp_path) as database_url:
        # Every registration POST counts against the limit, refused ones too.
        env = production_env(tmp_path, database_url, REGISTRATION_RATE_LIMIT="1000 per minute")
        engine = create_engine(database_url)
        try:
            with run_gunicorn(env, tmp_path, app="blog:app") as gunicorn:
                yield gunicorn.url, engine
        finally:
            engine.dispose()


def production_register(browser: Browser, username: str, number: int):
    """Register through the real form: GET it, then POST it with its CSRF token."""
    return browser.submit(
        "/auth/register",
        {
            "username": username,
            "email": f"prod{number}@example.com",
            "password": "a-good-password",
            "password2": "a-good-password",
        },
    )


def production_usernames(engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(select(User.username).order_by(User.id)))


@pytest.mark.system
def test_look_alikes_under_gunicorn(server):
    """What a person sees, CSRF token and all, and what the database keeps."""
    url, engine = server
    browser = Browser(url)
    attempts = [
        ("demo", None),
        (DEMO_CYRILLIC_O, MIXES_SCRIPTS),
        ("Alpha", None),
        (ALPHA_GREEK_A, MIXES_SCRIPTS),
        ("pop", None),
        (POP_CYRILLIC, LOOKS_TAKEN),
        (TOM_CYRILLIC, None),
        ("TOM", LOOKS_TAKEN),
        ("山田たろう", None),
        ("金민수", None),
        ("\u202eomed", WRONG_CHARACTERS),
        ("demo\ufe0f", WRONG_CHARACTERS),
    ]
    for number, (name, message) in enumerate(attempts):
        status, headers, page = production_register(browser, name, number)
        if message is None:
            assert (status, headers["Location"]) == (302, "/auth/login"), name
        else:
            assert status == 200, name
            assert form_errors(page) == {"username": [message]}, name
    assert production_usernames(engine) == [
        "demo",
        "Alpha",
        "pop",
        TOM_CYRILLIC,
        "山田たろう",
        "金민수",
    ]


@pytest.mark.system
def test_rename_under_gunicorn(server):
    """Renaming to someone else's look-alike is refused; to your own, accepted."""
    url, engine = server
    browser = Browser(url)
    for number, name in enumerate(["carol", "dave"], start=100):
        status, headers, _ = production_register(browser, name, number)
        assert (status, headers["Location"]) == (302, "/auth/login")
    status, headers, _ = browser.submit(
        "/auth/login", {"username": "carol", "password": "a-good-password"}
    )
    assert (status, headers["Location"]) == (302, "/")

    for name, message in [("dave", USERNAME_TAKEN), ("dav\u0435", MIXES_SCRIPTS)]:
        status, _, page = browser.submit("/edit_profile", {"username": name, "about_me": ""})
        assert status == 200
        assert form_errors(page) == {"username": [message]}
    status, headers, _ = browser.submit("/edit_profile", {"username": "CAR0L", "about_me": ""})
    assert (status, headers["Location"]) == (302, "/edit_profile")
    with engine.connect() as connection:
        names = set(connection.scalars(select(User.username).where(User.id > 0)))
    assert {"CAR0L", "dave"} <= names
    assert "carol" not in names
