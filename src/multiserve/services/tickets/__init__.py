"""The ticket office (issue 5): a shared inventory that never oversells and never loses an
acknowledged sale. :class:`TicketService` is the server side; :mod:`.rush` drives buyers and
verifies the outcome; :mod:`.cli` is ``multiserve tickets init|rush|check``. Stores live in
:mod:`multiserve.stores`."""
from .service import TicketService

__all__ = ["TicketService"]
