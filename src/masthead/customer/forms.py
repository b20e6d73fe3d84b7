"""Customer zone forms: they parse and check input; the writes are users.services'."""

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from masthead.users import services


class SignupForm(forms.Form):
    """A new reader's account: e-mail, password, and optionally a first name."""

    email = forms.EmailField(label=_("E-mail"), max_length=254)
    password = forms.CharField(label=_("Password"), strip=False, max_length=services.MAX_PASSWORD_LENGTH,
                               widget=forms.PasswordInput)
    first_name = forms.CharField(label=_("First name (optional)"), max_length=150, required=False)

    def clean_password(self):
        password = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password

    def save(self, *, source: str):
        """The new user, in the language the page is shown in, or None with the refusal on the form
        (an e-mail already registered, for one)."""
        language = get_language()
        locale = language if language in dict(settings.LANGUAGES) else settings.LANGUAGE_CODE
        try:
            return services.create_user(email=self.cleaned_data["email"], password=self.cleaned_data["password"],
                                        first_name=self.cleaned_data["first_name"], source=source, locale=locale)
        except services.UserError as exc:
            if exc.code == "email_taken":
                self.add_error("email", _("An account with this e-mail already exists. Please log in instead."))
            else:
                self.add_error(exc.field if exc.field in self.fields else None, exc.message)
            return None
