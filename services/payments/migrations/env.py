from services.common.db import run_migrations_online
from services.payments.models import Base

run_migrations_online(Base.metadata)
