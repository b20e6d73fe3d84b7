from django.contrib.auth import views as auth_views
from django.urls import path

from masthead.customer import views

app_name = "customer"

urlpatterns = [
    path("", views.home, name="home"),
    path("account/", views.account, name="account"),
    path("subscriptions/", views.subscriptions, name="subscriptions"),
    path("recurring/", views.recurring, name="recurring"),
    path("recurring/<int:pk>/stop/", views.recurring_stop, name="recurring_stop"),
    path("recurring/<int:pk>/reactivate/", views.recurring_reactivate, name="recurring_reactivate"),
    path("family/activate/<str:code>/", views.family_activate, name="family_activate"),
    path("family/revoke/<str:code>/", views.family_revoke, name="family_revoke"),
    path("login/", auth_views.LoginView.as_view(template_name="customer/login.html",
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
