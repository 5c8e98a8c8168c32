"""Command-line tools: `flask seed` fills an empty database with demo data."""

import random
from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import func, insert, select
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.models import Post, User, followers, now_utc

DEMO_PASSWORD = "demo-password"

FIRST_NAMES = (
    "alice bob carol dave erin frank grace heidi ivan judy "
    "mallory niaj olivia peggy rupert sybil trent victor walter xiaoming"
).split()
WORDS = (
    "flask blueprint request response template error handler database session commit "
    "rollback migration logging mail server gunicorn worker query index page form "
    "validation user post follow timeline cache deploy config secret test browser"
).split()


def fake_sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(5, 16))
    return " ".join(words).capitalize() + "."


def seed_database(users: int, posts: int, follows: int, seed: int) -> None:
    """Insert demo users, posts and follows in one transaction.

    Deterministic: the same numbers and seed give the same data. Rows go in with
    bulk INSERTs, and the password is hashed once for every demo user (hashing
    is deliberately slow: hashing 1,000 passwords would take most of a minute).
    """
    rng = random.Random(seed)
    now = now_utc()
    password_hash = generate_password_hash(
        DEMO_PASSWORD, method=current_app.config["PASSWORD_HASH_METHOD"]
    )
    names = ["demo"] + [
        f"{FIRST_NAMES[i % len(FIRST_NAMES)]}{i // len(FIRST_NAMES) + 1}" for i in range(users - 1)
    ]
    user_rows = [
        {
            "username": name,
            "email": f"{name}@example.com",
            "password_hash": password_hash,
            "about_me": fake_sentence(rng),
            "created": now - timedelta(days=365),
            "last_seen": now - timedelta(minutes=rng.randint(1, 60 * 24 * 30)),
        }
        for name in names
    ]
    # RETURNING gives back the new ids in the order of the rows we sent.
    user_ids = list(
        db.session.scalars(insert(User).returning(User.id, sort_by_parameter_order=True), user_rows)
    )

    post_rows = [
        {
            "body": fake_sentence(rng),
            "user_id": rng.choice(user_ids),
            "timestamp": now - timedelta(seconds=rng.randint(60, 60 * 60 * 24 * 365)),
        }
        for _ in range(posts)
    ]
    if post_rows:
        db.session.execute(insert(Post), post_rows)

    follow_rows = []
    for user_id in user_ids:
        others = [other for other in user_ids if other != user_id]
        for followed_id in rng.sample(others, min(follows, len(others))):
            follow_rows.append({"follower_id": user_id, "followed_id": followed_id})
    if follow_rows:
        db.session.execute(insert(followers), follow_rows)
    db.session.commit()


@click.command("seed")
@click.option("--users", default=25, show_default=True, type=click.IntRange(min=1))
@click.option("--posts", default=250, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--follows", default=5, show_default=True, type=click.IntRange(min=0), help="Follows per user."
)
@click.option("--seed", "random_seed", default=2018, show_default=True, help="Random seed.")
@click.option("--if-empty", is_flag=True, help="Do nothing, successfully, if there are users.")
# The `flask` command pushes an app context for every command, but Flask's
# test runner (app.test_cli_runner()) does so only for commands that ask.
@with_appcontext
def seed_command(users: int, posts: int, follows: int, random_seed: int, if_empty: bool) -> None:
    """Fill an empty database with demo users, posts and follows."""
    existing = db.session.scalar(select(func.count()).select_from(User))
    if existing:
        message = f"The database already has {existing} users; not adding demo data."
        if if_empty:
            click.echo(message)
            return
        raise click.ClickException(message)
    seed_database(users, posts, follows, random_seed)
    click.echo(f"Added {users} users, {posts} posts and {follows} follows per user.")
    click.echo(f"Log in as 'demo' with password '{DEMO_PASSWORD}'.")


def register_commands(app: Flask) -> None:
    app.cli.add_command(seed_command)
