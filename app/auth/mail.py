"""Outgoing mail: SMTP when ``MAIL_SERVER`` is set, otherwise the server log (development).

Like Django's console e-mail backend, a development site with no mail server writes each
message to its log, so a password reset can be tried without one. In production a missing
``MAIL_SERVER`` is logged as a warning and the message, which may hold a secret link, is not.
"""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from flask import current_app

log = logging.getLogger("tidings.mail")

#: Seconds to wait for the SMTP server before giving up (the request is waiting too).
SMTP_TIMEOUT = 10


def send_mail(to: str, subject: str, body: str) -> bool:
    """Send one plain-text message; return whether it left (or, in development, was logged).

    Failures are logged, not raised: the caller answers the same way either way, so the
    answer never tells a visitor whether an address exists.
    """
    config = current_app.config
    if not config.get("MAIL_SERVER"):
        if config.get("TIDINGS_ENV") == "production":
            log.warning("mail not sent: MAIL_SERVER is not set subject=%s", subject)
            return False
        log.info("mail written to the log instead of sent (MAIL_SERVER is not set) "
                 "to=%s subject=%s body=%s", to, subject, body)
        return True
    message = EmailMessage()
    message["From"] = config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    try:
        with smtplib.SMTP(config["MAIL_SERVER"], int(config["MAIL_PORT"]),
                          timeout=SMTP_TIMEOUT) as smtp:
            if config.get("MAIL_USE_TLS"):
                smtp.starttls()
            if config.get("MAIL_USERNAME"):
                smtp.login(config["MAIL_USERNAME"], config.get("MAIL_PASSWORD") or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("mail not sent: %s subject=%s", type(exc).__name__, subject)
        return False
    return True
