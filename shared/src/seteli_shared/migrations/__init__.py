"""Migrations of the tables every service has that came after the services' own first migrations: a branch of
its own (``branch_labels = ("seteli_shared",)``) that ``db.upgrade`` adds to each service's migrations, so that
no service's history has to change for them. ``versions/`` holds the revisions."""
