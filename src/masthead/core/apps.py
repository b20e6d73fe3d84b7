from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "masthead.core"
    label = "core"

    def ready(self):
        from masthead.core import events, widgets

        events.subscribe(events.WorkerHeartbeat, events.record_heartbeat, asynchronous=True)
        widgets.register("admin.dashboard", "core.worker", template="core/widgets/worker.html",
                         context=widgets_context_worker, priority=900)


def widgets_context_worker(request, **_):
    from masthead.core.queries import last_heartbeat

    return {"heartbeat": last_heartbeat()}
