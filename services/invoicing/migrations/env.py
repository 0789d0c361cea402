from services.common.db import run_migrations_online
from services.invoicing.models import Base

run_migrations_online(Base.metadata)
