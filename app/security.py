"""Security headers on every response, and rate limits on the forms that guess passwords.

Headers. Jinja escapes what users write, so a post can't inject a script; the
Content-Security-Policy is the second line of defence for the day a template
gets that wrong: the browser runs only scripts and styles served by this site,
never inline ones, and no other site may show our pages in a frame (a
"clickjacking" page could lay our buttons under its own). Every page of the
blog works under this policy because Bootstrap's CSS and JS are served by the
app itself (``BOOTSTRAP_SERVE_LOCAL``) and no template has a ``<script>``
block or a ``style=`` attribute; keep it that way.

Two headers depend on the request. Over HTTPS, Strict-Transport-Security
tells the browser to use only HTTPS for this host for ``HSTS_MAX_AGE``
seconds (a year by default; 0 sends none), so that nobody on the network can
turn a later visit back into plain HTTP and read the cookies. It is never
sent over plain HTTP, where browsers ignore it; behind a proxy, the request
counts as HTTPS only if the proxy says so and ``PROXY_COUNT`` lets us believe
it. And every response rendered for a logged-in user says ``Cache-Control:
private, no-store``: no shared cache keeps one person's page for the next,
and after logging out the back button can't bring the pages back from the
browser's cache. Static files keep their caching, and so do a visitor's pages.

Rate limits. Logging in is where passwords are guessed, and a reset request
sends a mail, so both are limited, counting POSTs only (showing the form is
free) and, for logging in, only the failed ones (so a classroom behind one
address can all log in to the demo account), in two ways at once:

- per client (its IP address, ``client_key``): one machine trying many accounts;
- per account (the username typed, or the address a reset link is asked
  for), whatever the address: many machines guessing one password, or
  flooding one mailbox.

The forms where a logged-in user types their current password (changing it
or the email address, deleting the account) are limited the same way, per
client and per user, counting wrong passwords and the mails and answers the
email form sends (``limit_password_checks``).

Registering is limited per client (``limit_registrations``), counting the
registrations that create an account or say that an address has one
("Please use a different email address"): what a script creating accounts
or testing addresses does (``registration_counts``). A client is an IPv4
address or an IPv6 /64 network (``client_key``).

How many of each are allowed, and why those numbers, is in config.py
(``AUTH_RATE_LIMIT_PER_CLIENT``, ``AUTH_RATE_LIMIT_PER_ACCOUNT``,
``REGISTRATION_RATE_LIMIT``). No other URL is limited: there are no default
limits, so ``/healthz``, static files and the rest of the site are never
refused. A refused request gets the app's 429 page (app/errors.py) with a
``Retry-After`` header.
"""

import hashlib
import ipaddress
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from flask import Flask, Response, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user

from app.extensions import limiter
from app.models import name_key

View = TypeVar("View", bound=Callable)

GRAVATAR = "https://www.gravatar.com"


def content_security_policy(use_gravatar: bool) -> str:
    """The Content-Security-Policy header: this site's own resources, nothing else."""
    directives = {
        # Anything not named below (fonts, fetch, frames...): this site only.
        "default-src": "'self'",
        # Files from this site only: no inline <script>, no onclick=, no eval().
        "script-src": "'self'",
        # Stylesheets from this site only: no <style> blocks, no style= attributes.
        "style-src": "'self'",
        # data: for the small SVG icons inside Bootstrap's CSS (the navbar toggler).
        # Gravatar only when it is switched on (app/templating.py's avatar()).
        "img-src": "'self' data:" + (f" {GRAVATAR}" if use_gravatar else ""),
        # Forms post only to this site, even if markup were injected into a page.
        "form-action": "'self'",
        # An injected <base href> can't send the page's relative links elsewhere.
        "base-uri": "'self'",
        # No plugins (<object>, <embed>).
        "object-src": "'none'",
        # No other site may frame our pages.
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {sources}" for name, sources in directives.items())


def security_headers(use_gravatar: bool) -> dict[str, str]:
    """The headers that every response carries."""
    return {
        "Content-Security-Policy": content_security_policy(use_gravatar),
        # Take the Content-Type we send at its word: never run a file as a script
        # or a stylesheet because its content looks like one.
        "X-Content-Type-Options": "nosniff",
        # Our own pages need the referrer: over HTTPS Flask-WTF refuses a form
        # without one (its CSRF check), and logging in from a follow button
        # returns to that page. Other sites, Gravatar included, don't need to
        # know which page a reader was on, so they get none ("same-origin"; the
        # browsers' default, strict-origin-when-cross-origin, would tell them our
        # address).
        "Referrer-Policy": "same-origin",
        # frame-ancestors 'none' for browsers that predate CSP.
        "X-Frame-Options": "DENY",
    }


def strict_transport_security(max_age: int) -> str | None:
    """The Strict-Transport-Security header for HTTPS responses; None if `max_age` is 0.

    No ``includeSubDomains``: that would hold every other host of the domain
    to HTTPS as well, and some of them may not have it.
    """
    return f"max-age={max_age}" if max_age else None


def session_names_a_user() -> bool:
    """True if this request's session belongs to a logged-in user, without loading the user.

    Flask-Login keeps the login under ``_user_id`` in the session. Asking
    `current_user` instead would query the database, and on the 503 "database
    unavailable" page that query fails again: an after-request function that
    raises turns the 503 into a 500.
    """
    return "_user_id" in session


def serves_static_file() -> bool:
    """True if the request is for a static file: the app's ("static") or a
    blueprint's ("bootstrap.static", Bootstrap-Flask's CSS and JS)."""
    endpoint = request.endpoint or ""  # None when no URL matched (a 404)
    return endpoint == "static" or endpoint.endswith(".static")


def client_key() -> str:
    """The client a per-client limit counts: its IPv4 address, or its IPv6 /64 network.

    An IPv6 subscriber is usually given a whole /64 (18 billion billion
    addresses), so counting single addresses would let one machine take a
    new address for every try. Behind a proxy the address is the real
    client's (PROXY_COUNT), as everywhere else.
    """
    address = request.remote_addr or ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP address (a Unix socket's peer): count it as it is
        return address
    if ip.version == 4:
        return address
    if ip.ipv4_mapped is not None:  # "::ffff:203.0.113.5" is an IPv4 client
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def per_client_limit() -> str:
    """The per-client rate limit, read from the config at each request."""
    return current_app.config["AUTH_RATE_LIMIT_PER_CLIENT"]


def per_account_limit() -> str:
    """The per-account rate limit, read from the config at each request."""
    return current_app.config["AUTH_RATE_LIMIT_PER_ACCOUNT"]


def account_named(field: str) -> str:
    """The account named in the posted form's `field`, as lookups compare it ("" if none).

    `name_key` makes "Admin", " admin " and "\uff41dmin" one account, as in
    `User.select_by_username`, so changing the case doesn't buy a new set of tries.
    Never raises: a body that isn't a form, or isn't valid UTF-8, reads as an
    empty form, and an oversized one is the 413 page before we get here.
    """
    return name_key(request.form.get(field, ""))


def account_key(field: str) -> str:
    """The rate-limit key for the account named in `field`.

    A digest rather than the name: every key has the same small size in the
    storage, whatever was posted, and Redis never holds usernames or addresses.
    """
    digest = hashlib.sha256(account_named(field).encode("utf-8", "replace")).hexdigest()
    return f"account:{digest}"


def names_no_account(field: str) -> bool:
    """True when the form names no account: nothing to count per account.

    Such a request can't log anyone in or send any mail; it still counts per client.
    """
    return not account_named(field)


def login_failed(response: Response) -> bool:
    """True if a login POST failed: the form came back (200) instead of a redirect."""
    return response.status_code == 200


def limit_auth_attempts(
    account_field: str, count_if: Callable[[Response], bool] | None = None
) -> Callable[[View], View]:
    """Decorate a view so its POSTs are limited per client and per account.

    `account_field` is the form field that names the account ("username", "email").
    `count_if`, given a response, says whether the request counts; by default
    every POST does. A request over the limit is refused before the view runs.
    """
    # With `count_if` the limiter checks before the view and counts after it, so
    # requests running at the same moment can each pass the check: the limit
    # plus at most one try per request in flight (a sync gunicorn worker runs one).
    per_client = limiter.limit(
        per_client_limit, key_func=client_key, methods=["POST"], deduct_when=count_if
    )
    per_account = limiter.limit(
        per_account_limit,
        key_func=partial(account_key, account_field),
        exempt_when=partial(names_no_account, account_field),
        methods=["POST"],
        deduct_when=count_if,
    )

    def decorate(view: View) -> View:
        return per_client(per_account(view))

    return decorate


def logged_in_user_key() -> str:
    """The rate-limit key of the logged-in user ("" for a visitor, who is exempt)."""
    return f"user:{current_user.id}" if current_user.is_authenticated else ""


# The forms where a logged-in user types their current password: changing it,
# changing the email address, deleting the account. Someone who finds a browser
# left logged in could otherwise try password after password there, where the
# login form would stop them. What counts (`counts_against_password_checks`):
# a wrong current password; and on the email form, an answer saying that an
# address has an account, or a confirmation mail sent, so that nobody can use
# the form to test addresses or to mail one over and over. A typo in the new
# password costs nothing. The login form's numbers, per client and per user;
# the three forms share one count (a shared limit's scope), so that moving
# from one to the next buys no new tries.
def counts_against_password_checks(response: Response) -> bool:
    """True if this POST counts against the limits above; what counts sets
    ``g.password_check_counts`` (`count_against_password_checks`)."""
    return g.get("password_check_counts", False)


def count_against_password_checks() -> None:
    """Make this request count against the password-check limits (see above)."""
    g.password_check_counts = True


password_checks_per_client = limiter.shared_limit(
    per_client_limit,
    scope="password-check",
    key_func=client_key,
    methods=["POST"],
    deduct_when=counts_against_password_checks,
)
password_checks_per_account = limiter.shared_limit(
    per_account_limit,
    scope="password-check-account",
    key_func=logged_in_user_key,
    exempt_when=lambda: not current_user.is_authenticated,
    methods=["POST"],
    deduct_when=counts_against_password_checks,
)


def limit_password_checks(view: View) -> View:
    """Decorate a view whose form asks for the current password (see above)."""
    return password_checks_per_client(password_checks_per_account(view))


def registration_limit() -> str:
    """The rate limit on registering, read from the config at each request."""
    return current_app.config["REGISTRATION_RATE_LIMIT"]


def registration_counts(response: Response) -> bool:
    """True if a registration counts against the limit: it created an account
    (the redirect to the login page), or it told that an address has one.

    Those are what a script creating accounts or testing addresses does. A
    typo, a weak password or a taken username (usernames are public) costs
    nothing, so twenty people racing for one name from one office all get
    their answer. The view sets ``g.told_address_is_taken``.
    """
    return response.status_code == 302 or g.get("told_address_is_taken", False)


limit_registrations = limiter.limit(
    registration_limit, key_func=client_key, methods=["POST"], deduct_when=registration_counts
)


class HttpsCookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, and every cookie Secure over HTTPS.

    A Secure cookie is never sent over plain HTTP, where anyone on the network
    could copy it and be logged in as you. ``SESSION_COOKIE_SECURE=1`` makes
    cookies Secure always, but then logging in over plain HTTP (a first test of
    a new server, or 127.0.0.1) silently fails: the browser never returns the
    cookie. So by default a cookie is Secure exactly when the request came over
    HTTPS (behind a proxy that terminates HTTPS, with PROXY_COUNT set).

    Saving the session is the last thing Flask does to a response, after
    every after-request function (Flask-Login's remember-me cookie included),
    which makes it the one place that sees every cookie the response sets.
    """

    def save_session(self, app: Flask, session, response: Response) -> None:
        super().save_session(app, session, response)
        if request.is_secure:
            cookies = response.headers.getlist("Set-Cookie")
            response.headers.setlist("Set-Cookie", [secure_cookie(c) for c in cookies])


def secure_cookie(set_cookie: str) -> str:
    """A Set-Cookie header value with the Secure attribute."""
    attributes = {part.strip().lower() for part in set_cookie.split(";")[1:]}
    return set_cookie if "secure" in attributes else f"{set_cookie}; Secure"


def register_security(app: Flask) -> None:
    """Put the security headers on every response, and make cookies Secure over
    HTTPS (`HttpsCookieSessionInterface`). The rate limiter is bound by `create_app`."""
    app.session_interface = HttpsCookieSessionInterface()
    headers = security_headers(app.config["USE_GRAVATAR"])
    hsts = strict_transport_security(app.config["HSTS_MAX_AGE"])

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        """Add the headers to any response: pages, redirects, error pages, JSON,
        static files; HSTS over HTTPS only, no-store for a logged-in user."""
        for name, value in headers.items():
            # setdefault: a view that needs a different policy can set its own.
            response.headers.setdefault(name, value)
        if hsts and request.is_secure:
            response.headers["Strict-Transport-Security"] = hsts
        if session_names_a_user() and not serves_static_file():
            # Whatever else was said about caching: this was made for one person.
            response.headers["Cache-Control"] = "private, no-store"
        return response
