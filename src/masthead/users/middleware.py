from django.utils import translation


class UserLocaleMiddleware:
    """A logged-in user's own language wins over the browser's (after LocaleMiddleware)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.locale:
            translation.activate(user.locale)
            request.LANGUAGE_CODE = user.locale
        response = self.get_response(request)
        if user is not None and user.is_authenticated and user.locale:
            response.headers.setdefault("Content-Language", user.locale)
        return response
