from django.db import migrations

LABELS = [("regular", 100), ("free", 200), ("donation", 300), ("gift", 400), ("prepaid", 600),
          ("upgrade", 900), ("family", 900), ("special", 1000)]


def seed(apps, schema_editor):
    name_model = apps.get_model("subscriptions", "SubscriptionTypeName")
    for code, sorting in LABELS:
        name_model.objects.get_or_create(code=code, defaults={"sorting": sorting})


class Migration(migrations.Migration):
    dependencies = [("subscriptions", "0002_subscriptiontypename_subscriptiontype_subscription_and_more")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
