"""Widget registry: placeholders rendered by priority, hidden when context is None."""

import pytest
from django.template import Context, Template
from django.test import RequestFactory

from masthead.core import widgets

pytestmark = pytest.mark.django_db


@pytest.fixture
def placeholder():
    name = "test.placeholder"
    yield name
    for widget in widgets.widgets_for(name):
        widgets.unregister(name, widget.name)


def test_widgets_render_in_priority_order_with_their_context(placeholder, tmp_path, settings):
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    (tmp_path / "w.html").write_text("[{{ label }}:{{ who }}]")
    widgets.register(placeholder, "b", template="w.html", context=lambda r, **c: {"label": "B"}, priority=20)
    widgets.register(placeholder, "a", template="w.html", context=lambda r, **c: {"label": "A"}, priority=10)
    widgets.register(placeholder, "hidden", template="w.html", context=lambda r, **c: None, priority=5)
    request = RequestFactory().get("/")
    html = Template('{% load widgets %}{% widgets "test.placeholder" who=person %}').render(
        Context({"request": request, "person": "eva"}))
    assert html == ('<section class="mh-widget" data-widget="a">[A:eva]</section>'
                    '<section class="mh-widget" data-widget="b">[B:eva]</section>')


def test_registering_again_replaces_by_name(placeholder):
    widgets.register(placeholder, "a", template="x.html", priority=10)
    widgets.register(placeholder, "a", template="y.html", priority=10)
    assert [w.template for w in widgets.widgets_for(placeholder)] == ["y.html"]


def test_admin_dashboard_renders_registered_widgets(client, make_user):
    admin = make_user(email="boss@example.com", is_superuser=True)
    make_user(email="reader@example.com")
    client.force_login(admin)
    response = client.get("/admin/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-widget="users.counts"' in html and 'data-widget="core.worker"' in html
    assert '<p class="mh-figure" data-testid="users-total">2</p>' in html
    assert html.index('data-widget="users.counts"') < html.index('data-widget="core.worker"')


def test_admin_user_page_renders_user_detail_placeholder(client, make_user):
    from masthead.users import services

    admin = make_user(email="boss@example.com", is_superuser=True)
    reader = make_user(email="reader@example.com")
    services.issue_access_token(user=reader, source="api")
    client.force_login(admin)
    html = client.get(f"/admin/users/user/{reader.pk}/change/").content.decode()
    assert 'data-placeholder="admin.user.detail"' in html
    assert "Live user tokens (1)" in html
