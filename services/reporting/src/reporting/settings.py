from pydantic import Field

from seteli_shared.settings import ServiceSettings


class ReportingSettings(ServiceSettings):
    service_name: str = "reporting"
    #: reporting folds whatever arrives a batch at a time (one transaction, a few statements per table whatever
    #: the batch's size): large batches make an event cheap (bench/README.md, ``charge_events.py``)
    consumer_prefetch: int = Field(default=2000, ge=1)
    consumer_batch_size: int = Field(default=1000, ge=1)
    gc_young_threshold: int = Field(default=50_000, ge=0)  # fewer collections of a batch's short-lived objects
