"""The login backend of the admin and the customer zone: an e-mail, or another identifier a login
resolver understands (a phone number with mobiletech), with the password."""

from django.contrib.auth.backends import ModelBackend

from masthead.users.models import User
from masthead.users.services import MAX_PASSWORD_LENGTH, find_user


class LoginBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if not username or password is None or len(username) > 254:
            return None
        user = find_user(username)
        if user is None:
            User().set_password(password[:MAX_PASSWORD_LENGTH])  # same time as a wrong password
            return None
        if len(password) <= MAX_PASSWORD_LENGTH and user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
