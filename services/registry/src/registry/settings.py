from seteli_shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    service_name: str = "registry"
