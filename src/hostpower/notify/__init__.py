"""Notifications: events delivered to webhooks and by mail (docs/notifications.md).

`send.py` sends one event to one notifier (webhook.py, mail.py);
`deliverer.py` is the engine's background task that reads the events from
the database and delivers each to every notifier that wants it, once,
whichever engine wrote it (store/notifycursor.py).
"""
