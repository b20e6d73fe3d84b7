from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class UsersConfig(AppConfig):
    name = "masthead.users"
    label = "users"
    verbose_name = _("Users")

    def ready(self):
        from masthead.core import widgets
        from masthead.users import catalog, queries

        catalog.register()

        widgets.register("admin.dashboard", "users.counts", template="users/widgets/counts.html",
                         context=lambda request, **_: {"counts": queries.user_counts()}, priority=10)
        widgets.register("admin.user.detail", "users.tokens", template="users/widgets/tokens.html",
                         context=lambda request, user_obj=None, **_: queries.token_summary(user_obj), priority=900)
