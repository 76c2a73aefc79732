from decimal import Decimal

from pydantic import Field

from seteli_shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    #: the operator's fee on settled value (5 % in the seed); per-funder contracts come later
    operator_fee_rate: Decimal = Field(default=Decimal("0.05"), ge=0, lt=1)
    #: a charge is retried once on a dropped connection (``usecases.charge_voucher``): no round trip per checkout
    db_pool_pre_ping: bool = False
