from django.db import models
from django.utils.translation import gettext_lazy as _


class ContentAccess(models.Model):
    """A kind of access a subscription grants: web, mobile, print, or any the publisher defines."""

    name = models.SlugField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=255, blank=True)
    class_name = models.CharField(_("CSS class"), max_length=100, blank=True)
    sorting = models.PositiveIntegerField(_("sorting"), default=100)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("content access")
        verbose_name_plural = _("content access")
        ordering = ["sorting", "name"]

    def __str__(self):
        return self.name
