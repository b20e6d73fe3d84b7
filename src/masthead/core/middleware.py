"""Edge of /api/: CORS (R-AUTH-2) and JSON bodies for the errors Django answers before any handler."""

from django.conf import settings
from django.http import JsonResponse

ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Accept, X-Requested-With, Idempotency-Key"


def origin_allowed(origin: str) -> bool:
    allowed = settings.API_CORS_ORIGINS
    return "*" in allowed or origin in allowed


class ApiMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith("/api/"):
            return self.get_response(request)
        origin = request.headers.get("Origin")
        if origin and not origin_allowed(origin):
            return JsonResponse(
                {"error": "origin_not_allowed", "message": f"Origin is not allowed: {origin}"}, status=403
            )
        if request.method == "OPTIONS":
            response = JsonResponse({"options": "ok"})
            response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response["Access-Control-Max-Age"] = str(settings.API_CORS_MAX_AGE)
        else:
            response = self.get_response(request)
            if response.status_code == 405:
                response = JsonResponse(
                    {"status": "error", "code": "method_not_allowed",
                     "message": f"Method {request.method} is not allowed here; use {response.get('Allow', '')}"},
                    status=405, headers={"Allow": response.get("Allow", "")})
        if origin:
            response["Access-Control-Allow-Origin"] = "*" if "*" in settings.API_CORS_ORIGINS else origin
            response["Vary"] = "Origin"
        return response
