"""Errors the sandbox answers with, in Salesforce's REST shape (a JSON array of objects)."""

from __future__ import annotations

from typing import Any

INVALID_SESSION_MESSAGE = "Session expired or invalid"
REQUEST_LIMIT_MESSAGE = "TotalRequests Limit exceeded."
NOT_FOUND_MESSAGE = "The requested resource does not exist"


class ApiError(Exception):
    """A refused call: HTTP status, Salesforce ``errorCode`` and message."""

    def __init__(
        self, status: int, error_code: str, message: str, fields: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields:
            entry["fields"] = list(self.fields)
        return [entry]


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGE)


def invalid_session() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", INVALID_SESSION_MESSAGE)


def request_limit_exceeded() -> ApiError:
    return ApiError(403, "REQUEST_LIMIT_EXCEEDED", REQUEST_LIMIT_MESSAGE)


def invalid_type(object_name: str) -> ApiError:
    return ApiError(
        400,
        "INVALID_TYPE",
        f"sObject type '{object_name}' is not supported. If you are attempting to use a custom"
        " object, be sure to append the '__c' after the entity name. Please reference your WSDL"
        " or the describe call for the appropriate names.",
    )


def invalid_field(field: str, object_name: str, prefix: str = "") -> ApiError:
    return ApiError(
        400,
        "INVALID_FIELD",
        f"{prefix}No such column '{field}' on entity '{object_name}'. If you are attempting to"
        " use a custom field, be sure to append the '__c' after the custom field name. Please"
        " reference your WSDL or the describe call for the appropriate names.",
    )


def not_writable(field: str) -> ApiError:
    return ApiError(
        400,
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        f"Unable to create/update fields: {field}. Please check the security settings of this"
        " field and verify that it is read/write for your profile or permission set.",
        (field,),
    )


def no_such_column(field: str, object_name: str) -> ApiError:
    """A write that names a field the org does not have (or the user cannot see)."""
    return ApiError(
        400, "INVALID_FIELD", f"No such column '{field}' on sobject of type {object_name}", (field,)
    )


def json_parser_error(detail: str) -> ApiError:
    return ApiError(400, "JSON_PARSER_ERROR", detail)
