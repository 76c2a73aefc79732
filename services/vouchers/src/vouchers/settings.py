from seteli_shared.settings import ServiceSettings


class VouchersSettings(ServiceSettings):
    service_name: str = "vouchers"
