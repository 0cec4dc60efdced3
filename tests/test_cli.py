"""An operator manages accounts from the command line."""

from __future__ import annotations

from sqlalchemy import func, select

from app.cli import DEMO_ACCOUNTS
from app.extensions import db
from app.models import User


def get_user(app, username):
    with app.app_context():
        return db.session.scalar(select(User).where(User.username == username))


def test_create_user_with_a_password_option(app, runner):
    result = runner.invoke(args=["create-user", "erin", "--password", "erin-password-1"])
    assert result.exit_code == 0, result.output
    assert "Created user 'erin'" in result.output
    erin = get_user(app, "erin")
    assert erin.role == "user" and erin.check_password("erin-password-1")


def test_create_admin_prompts_for_a_hidden_password(app, runner):
    result = runner.invoke(
        args=["create-user", "root2", "--admin"], input="root2-password-1\nroot2-password-1\n"
    )
    assert result.exit_code == 0, result.output
    assert "root2-password-1" not in result.output  # hidden input is not echoed
    assert get_user(app, "root2").is_admin


def test_create_user_refuses_a_taken_name_and_a_weak_password(runner):
    result = runner.invoke(args=["create-user", "alice", "--password", "fine-password-1"])
    assert result.exit_code != 0 and "already exists" in result.output
    result = runner.invoke(args=["create-user", "frank", "--password", "12345678"])
    assert result.exit_code != 0 and "only digits" in result.output


def test_seed_demo_creates_the_demo_accounts_once_and_says_how_to_log_in(app, runner):
    # The app fixture already has an "alice"; seeding must not reset her password.
    first = runner.invoke(args=["seed-demo"])
    second = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    for account in DEMO_ACCOUNTS:
        assert account.username in first.output and account.password in first.output
    for account in DEMO_ACCOUNTS[1:]:
        user = get_user(app, account.username)
        assert user.role == account.role and user.check_password(account.password)
    assert get_user(app, "alice").check_password("alice-password-1")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 2 + 2
