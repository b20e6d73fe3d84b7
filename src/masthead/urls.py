from django.contrib import admin
from django.urls import include, path, re_path
from django.utils.translation import gettext_lazy as _

from masthead.core.api import api, unknown_api_call
from masthead.core.api import router as core_router
from masthead.family.api import router as family_router
from masthead.messaging.api import router as sms_router
from masthead.mobiletech.api import router as mobiletech_router
from masthead.payments.api import router as payments_router
from masthead.subscriptions.api import router as subscriptions_router
from masthead.users.api import router as users_router

admin.site.site_header = "Masthead"
admin.site.site_title = "Masthead"
admin.site.index_title = _("Dashboard")

if not getattr(api, "_masthead_routers", False):
    api.add_router("", core_router)
    api.add_router("", users_router)
    api.add_router("", subscriptions_router)
    api.add_router("", payments_router)
    api.add_router("", family_router)
    api.add_router("", sms_router)
    api.add_router("", mobiletech_router)
    api._masthead_routers = True

urlpatterns = [
    path("api/v1/", api.urls),
    re_path(r"^api/v(?P<version>\d+)/(?P<rest>.*)$", unknown_api_call),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("sms/", include("masthead.messaging.urls")),
    path("", include("masthead.customer.urls")),
]

