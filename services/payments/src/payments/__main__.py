from seteli_shared.cli import service_main

from .app import SPEC
from .settings import PaymentsSettings


def main() -> None:
    service_main(SPEC, PaymentsSettings, "payments.app:create_app")


if __name__ == "__main__":
    main()
