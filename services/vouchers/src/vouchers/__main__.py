from seteli_shared.cli import service_main

from .app import SPEC
from .settings import VouchersSettings


def main() -> None:
    service_main(SPEC, VouchersSettings, "vouchers.app:create_app")


if __name__ == "__main__":
    main()
