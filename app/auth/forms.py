"""WTForms forms for the auth pages; Flask-WTF adds the CSRF token to each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp, ValidationError

from app.extensions import db
from app.models import User

#: Shortest password we accept.
MIN_PASSWORD_LENGTH = 8

#: Shown under the password field of every form that sets one.
PASSWORD_HINT = (
    f"At least {MIN_PASSWORD_LENGTH} characters, not only digits, and not your username."
)

#: Good enough to catch typos; the mail server is the real judge of an address.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def password_problem(password: str, username: str) -> str | None:
    """Explain why a password is too weak, or return None if it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Password must be at least {MIN_PASSWORD_LENGTH} characters."
    if password.isdigit():
        return "Password must not be only digits."
    if password.strip().lower() == username.strip().lower():
        return "Password must not be the same as the username."
    return None


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Remember me")
    submit = SubmitField("Log in")


class RegistrationForm(FlaskForm):
    username = StringField(
        "Username",
        validators=[
            DataRequired(),
            Length(min=3, max=64),
            Regexp(
                r"^[A-Za-z0-9_.-]+$",
                message="Use letters, digits, dots, dashes and underscores only.",
            ),
        ],
    )
    email = StringField(
        "Email (optional)",
        validators=[Optional(), Length(max=254),
                    Regexp(EMAIL_PATTERN, message="That does not look like an email address.")],
        filters=[lambda value: value.strip() if value else value],
    )
    password = PasswordField("Password", validators=[DataRequired()])
    confirm = PasswordField(
        "Repeat password", validators=[DataRequired(), EqualTo("password", "Passwords must match.")]
    )
    submit = SubmitField("Create account")

    def validate_username(self, field: StringField) -> None:
        # Checked here for a friendly message; the unique constraint still guards against races.
        if db.session.scalar(select(User.id).where(User.username == field.data.strip())):
            raise ValidationError("That username is already taken.")

    def validate_password(self, field: PasswordField) -> None:
        problem = password_problem(field.data or "", self.username.data or "")
        if problem:
            raise ValidationError(problem)


class ResetRequestForm(FlaskForm):
    login = StringField("Username or email", validators=[DataRequired(), Length(max=254)])
    submit = SubmitField("Send me a reset link")


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired()])
    confirm = PasswordField(
        "Repeat new password",
        validators=[DataRequired(), EqualTo("password", "Passwords must match.")],
    )
    submit = SubmitField("Set new password")

    def __init__(self, username: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.username = username

    def validate_password(self, field: PasswordField) -> None:
        problem = password_problem(field.data or "", self.username)
        if problem:
            raise ValidationError(problem)
