"""Field types, registered explicitly: adding a type is one new class plus one line here."""

from formwork.metadata.fieldtypes.attachment import AttachmentType
from formwork.metadata.fieldtypes.base import FieldType, FieldTypeRegistry, FieldValueError, field_types
from formwork.metadata.fieldtypes.choice import CheckboxType, MultiSelectType, SingleSelectType
from formwork.metadata.fieldtypes.computed import FormulaType, LookupType, RollupType
from formwork.metadata.fieldtypes.link import LinkType
from formwork.metadata.fieldtypes.numeric import (
    AutonumberType,
    CurrencyType,
    DecimalType,
    DurationType,
    NumberType,
    PercentType,
    RatingType,
)
from formwork.metadata.fieldtypes.people import CreatedByType, UpdatedByType, UserType
from formwork.metadata.fieldtypes.temporal import CreatedAtType, DateTimeType, DateType, UpdatedAtType
from formwork.metadata.fieldtypes.text import EmailType, LongTextType, PhoneType, TextType, UrlType

ALL_TYPES: tuple[type[FieldType], ...] = (
    TextType, LongTextType, EmailType, PhoneType, UrlType,
    NumberType, DecimalType, CurrencyType, PercentType, RatingType, DurationType, AutonumberType,
    DateType, DateTimeType, CreatedAtType, UpdatedAtType,
    CheckboxType, SingleSelectType, MultiSelectType,
    UserType, CreatedByType, UpdatedByType,
    LinkType, LookupType, RollupType, FormulaType,
    AttachmentType,
)


def register_field_types(registry: FieldTypeRegistry = field_types) -> FieldTypeRegistry:
    """Called once by create_app(); importing this module registers nothing."""
    for cls in ALL_TYPES:
        if cls.type not in registry:
            registry.register(cls())
    return registry


__all__ = ["FieldType", "FieldValueError", "field_types", "register_field_types"]
