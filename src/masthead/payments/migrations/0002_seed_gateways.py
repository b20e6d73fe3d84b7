from django.db import migrations

GATEWAYS = [
    # code, name, is_recurrent, sorting
    ("free", "Free (created by staff)", False, 10),
    ("fake_card", "Card simulator", True, 20),
]


def seed(apps, schema_editor):
    gateway_model = apps.get_model("payments", "PaymentGateway")
    for code, name, is_recurrent, sorting in GATEWAYS:
        gateway_model.objects.get_or_create(
            code=code, defaults={"name": name, "is_recurrent": is_recurrent, "sorting": sorting, "meta": {}})


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
