from django import template

from masthead.core.widgets import render_placeholder

register = template.Library()


@register.simple_tag(takes_context=True)
def widgets(context, placeholder, **kwargs):
    """``{% widgets "admin.dashboard" %}`` renders every widget registered there."""
    return render_placeholder(placeholder, context.get("request"), **kwargs)
