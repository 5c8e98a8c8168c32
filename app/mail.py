"""Sending mail: one small SMTP transport, and an outbox that sends in the background.

Both the error mails (app/reporting/error_mail.py) and the password-reset mail use it.
It is plain smtplib, with no Flask in it, so that it works in a background
thread where there is no app or request context.

Why not the standard `logging.handlers.SMTPHandler`, as most tutorials use? It
connects to the mail server in the request's own thread, for every record, so
a slow or dead server holds the user's error page for the whole timeout; it
has no implicit-TLS mode, which 163.com and 126.com require on port
465 (tutorials end up rewriting its emit()); it never verifies the server's
certificate; and it leaves the connection open when sending fails.
"""

import atexit
import logging
import os
import queue
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

# Delivery problems are logged here, never to the app's logger: that one mails
# its errors, and a failing mail must not try to mail its own failure.
log = logging.getLogger("blog.mail")


class MailError(Exception):
    """Delivery failed. `reason` says how, in words an admin can act on."""

    def __init__(self, reason: str, detail: object):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class MailSettings:
    """What the transport needs, copied out of the app config once."""

    server: str
    port: int
    use_tls: bool
    use_ssl: bool
    username: str | None
    password: str | None
    sender: str
    timeout: float
    ca_file: str | None = None

    @classmethod
    def from_config(cls, config: Mapping) -> "MailSettings | None":
        """Read the MAIL_* settings; None when mail is off (no MAIL_SERVER)."""
        if not config.get("MAIL_SERVER"):
            return None
        # 163.com and QQ Mail refuse any sender but the account that logged in
        # ("553 Mail from must equal authorized user"), so that is the default.
        sender = (
            config.get("MAIL_DEFAULT_SENDER")
            or config.get("MAIL_USERNAME")
            or f"blog@{config['MAIL_SERVER']}"
        )
        return cls(
            server=config["MAIL_SERVER"],
            port=config["MAIL_PORT"],
            use_tls=config["MAIL_USE_TLS"],
            use_ssl=config["MAIL_USE_SSL"],
            username=config.get("MAIL_USERNAME"),
            password=config.get("MAIL_PASSWORD"),
            sender=sender,
            timeout=config["MAIL_TIMEOUT"],
            ca_file=config.get("MAIL_CA_FILE"),
        )


def port_mismatch(settings: MailSettings) -> str | None:
    """Say so if the port is the other TLS mode's usual one: SSL on 25 or 587
    (refused at once: the server doesn't speak TLS first), STARTTLS on 465
    (waits out the whole timeout for a greeting that never comes)."""
    if settings.use_ssl and settings.port in (25, 587):
        return (
            f"MAIL_USE_SSL is on with MAIL_PORT={settings.port}, a port for plain SMTP or "
            "STARTTLS: implicit TLS is usually on 465 (or use MAIL_USE_TLS with 587)."
        )
    if settings.use_tls and settings.port == 465:
        return (
            "MAIL_USE_TLS (STARTTLS) is on with MAIL_PORT=465, the port for implicit TLS: "
            "use MAIL_USE_SSL with 465, or STARTTLS with 587."
        )
    return None


def build_message(
    settings: MailSettings, to: Iterable[str], subject: str, text: str, html: str | None = None
) -> EmailMessage:
    """A UTF-8 mail with a plain-text body and, if given, an HTML alternative."""
    message = EmailMessage()
    message["Subject"] = subject  # non-ASCII subjects are encoded (RFC 2047) on sending
    message["From"] = settings.sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def send(settings: MailSettings, message: EmailMessage) -> None:
    """Deliver `message` now, in this thread.

    :raise MailError: with a reason of "refused", "timed out", "TLS failed",
        "authentication failed" or "rejected" (see `failure_reason`).
    """
    # Certificates are verified in both TLS modes; MAIL_CA_FILE adds a private CA.
    context = ssl.create_default_context(cafile=settings.ca_file)
    try:
        if settings.use_ssl:
            smtp = smtplib.SMTP_SSL(
                settings.server, settings.port, timeout=settings.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.server, settings.port, timeout=settings.timeout)
        with smtp:  # QUIT and close, whatever happens below
            if settings.use_tls:
                smtp.starttls(context=context)
            if settings.username:
                smtp.login(settings.username, settings.password or "")
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as error:
        raise MailError(failure_reason(error), error) from error


def failure_reason(error: Exception) -> str:
    """Say in a word or two why sending failed."""
    # smtplib reports a server that never answers as "Connection unexpectedly
    # closed: timed out" (what the wrong port or TLS mode gives), with the
    # timeout as its context.
    if isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
        return "timed out"
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return "authentication failed"
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return "login not offered (does the server want MAIL_USE_TLS or MAIL_USE_SSL?)"
    if isinstance(error, ssl.SSLError):
        return "TLS failed"
    if isinstance(error, (smtplib.SMTPConnectError, ConnectionRefusedError, socket.gaierror)):
        return "refused"
    return "rejected"


class Outbox:
    """A queue of mail jobs and a thread, per process, that works through it.

    A request only puts a job on the queue, so it never waits for the mail
    server. The thread is started on first use in each process: gunicorn forks
    its workers from a master that may have imported the app already
    (``--preload``), and threads do not survive a fork, so one started at
    import time would silently not exist in the workers. After a fork the
    child starts afresh: new queue, new lock (one copied while another thread
    held it would stay locked for ever), no thread until the first mail.

    At interpreter exit (a gunicorn worker stopping on SIGTERM ends that way)
    the jobs still queued are finished, within `drain_timeout`.
    """

    _STOP = object()
    MAX_JOBS = 1000
    SETTLE_TIME = 0.05  # seconds

    def __init__(self, drain_timeout: float = 30.0, idle_interval: float = 5.0):
        self.drain_timeout = drain_timeout
        self.idle_interval = idle_interval
        self._idle_tasks: dict[str, Callable[[], None]] = {}
        self._reset()
        if hasattr(os, "register_at_fork"):  # Windows has no fork, and nothing to reset
            os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.drain)

    def _reset(self) -> None:
        self.dropped = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(self.MAX_JOBS)
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` soon, in the background thread of this process.

        The queue is bounded: if the mail server hangs during a storm of
        errors, jobs beyond the limit are dropped (and counted in the log)
        rather than piling up in memory.
        """
        self.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.error("Mail outbox full: %d mails dropped so far", self.dropped)

    def on_idle(self, name: str, task: Callable[[], None]) -> None:
        """Also run `task` every `idle_interval` seconds, busy or not
        (replacing an earlier task of that name)."""
        self._idle_tasks[name] = task

    def drain(self, timeout: float | None = None) -> bool:
        """Finish the queued jobs and stop the thread; True if it finished in time."""
        timeout = self.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive():
            return True
        try:
            self._queue.put(self._STOP, timeout=timeout)
        except queue.Full:
            return False
        thread.join(max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()

    def start(self) -> None:
        """Start this process's thread, unless it is running already.

        `submit` calls this; gunicorn.conf.py calls it in each new worker, so
        that the periodic tasks (error summaries) run in a worker that has
        not mailed anything yet, and after a restart.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            thread = threading.Thread(target=self._run, name="mail-outbox", daemon=True)
            thread.start()  # if this fails (no threads left), the caller's handler reports it
            self._thread = thread

    def _run(self) -> None:
        next_idle_run = time.monotonic() + self.idle_interval
        stopping = False
        while not stopping:
            try:
                job = self._queue.get(timeout=max(0.0, next_idle_run - time.monotonic()))
            except queue.Empty:
                job = None
            tasks = []
            if job is not None:
                # The request that queued this job is still sending its error
                # page; working now would compete with it for the interpreter
                # (one thread runs Python at a time). Let it finish, then take
                # everything queued meanwhile in one go.
                time.sleep(self.SETTLE_TIME)
                jobs = [job, *self._take_queued()]
                stopping = self._STOP in jobs
                tasks = [j for j in jobs if j is not self._STOP]
            if time.monotonic() >= next_idle_run:
                tasks += self._idle_tasks.values()
                next_idle_run = time.monotonic() + self.idle_interval
            for task in tasks:
                try:
                    task()
                except Exception:
                    # A job's own failures are its business (see deliver);
                    # this only keeps a bug in one job from killing the thread.
                    log.exception("Mail job failed")

    def _take_queued(self) -> list:
        taken = []
        with suppress(queue.Empty):
            while True:
                taken.append(self._queue.get_nowait())
        return taken


outbox = Outbox()


def deliver(settings: MailSettings, message: EmailMessage) -> None:
    """Send `message` now, from a job in the outbox; a failure is logged, never raised."""
    try:
        send(settings, message)
    except MailError as error:
        log.error("Mail to %s not sent: %s", message["To"], error)
