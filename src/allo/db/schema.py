"""Every table of every domain, gathered for Alembic and for tests."""

from allo.accounts import models as accounts
from allo.channels import models as channels
from allo.contacts import models as contacts
from allo.conversations import models as conversations
from allo.db.base import Base
from allo.intake import models as intake
from allo.replies import models as replies
from allo.routing import models as routing
from allo.triage import models as triage

metadata = Base.metadata

__all__ = [
    "accounts",
    "channels",
    "contacts",
    "conversations",
    "intake",
    "metadata",
    "replies",
    "routing",
    "triage",
]
