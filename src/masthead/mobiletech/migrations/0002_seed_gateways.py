from django.db import migrations

GATEWAYS = [
    # code, name, is_recurrent, sorting (R-MT-10)
    ("mobiletech", "Premium SMS", False, 1200),
    ("mobiletech_recurrent", "Premium SMS, recurring", True, 1201),
]


def seed(apps, schema_editor):
    gateway_model = apps.get_model("payments", "PaymentGateway")
    for code, name, is_recurrent, sorting in GATEWAYS:
        gateway_model.objects.get_or_create(
            code=code, defaults={"name": name, "is_recurrent": is_recurrent, "sorting": sorting, "meta": {}})


class Migration(migrations.Migration):
    dependencies = [("mobiletech", "0001_initial"), ("payments", "0002_seed_gateways")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
