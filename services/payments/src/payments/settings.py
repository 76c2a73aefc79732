from decimal import Decimal

from pydantic import Field

from seteli_shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    #: the operator's fee on settled value (5 % in the seed); per-funder contracts come later
    operator_fee_rate: Decimal = Field(default=Decimal("0.05"), ge=0, lt=1)
