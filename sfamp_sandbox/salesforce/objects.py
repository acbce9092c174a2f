"""The four sObject types of the sandbox org: Account, Contact, Opportunity and Plan__c.

Between them they hold every field type the sandbox emulates (see ``FIELD_TYPES``), so each
type can be exercised through describe, SOQL, Bulk CSV and change events. Accounts can be
person accounts (``IsPersonAccount``; see :mod:`person`).
"""

from __future__ import annotations

from sfamp_sandbox.salesforce.schema import (
    FieldDef,
    ObjectDef,
    address_fields,
    full_name,
    lookup_field,
    number_field,
    picklist_field,
    revenue_per_employee,
    system_fields,
    text_field,
)

INDUSTRIES = (
    "Agriculture",
    "Apparel",
    "Banking",
    "Biotechnology",
    "Chemicals",
    "Communications",
    "Construction",
    "Education",
    "Electronics",
    "Energy",
    "Finance",
    "Healthcare",
    "Media",
    "Retail",
    "Technology",
)
ACCOUNT_TYPES = ("Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other")
RATINGS = ("Hot", "Warm", "Cold")
TIERS = ("Free", "Starter", "Growth", "Enterprise")
REGIONS = ("AMER", "EMEA", "APAC", "LATAM")
STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
SALUTATIONS = ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Trade Show", "Other")
FEATURES = ("SSO", "Audit Log", "Sandbox", "API", "Priority Support")


def person_name_fields() -> tuple[FieldDef, ...]:
    """The components of a person account's name: null on business accounts, so nillable."""
    return (
        FieldDef(
            "Salutation", "picklist", "Salutation", length=40, picklist=SALUTATIONS, compound="Name"
        ),
        text_field("FirstName", "First Name", 40, compound="Name"),
        text_field("LastName", "Last Name", 80, compound="Name"),
    )


ACCOUNT = ObjectDef(
    "Account",
    "Account",
    "Accounts",
    "001",
    (
        *system_fields("Account"),
        text_field(
            "Name",
            "Account Name",
            nillable=False,
            id_lookup=True,
            name_field=True,
            extra_type_info="switchablepersonname",
        ),
        *person_name_fields(),
        FieldDef(
            "IsPersonAccount",
            "boolean",
            "Is Person Account",
            nillable=False,
            createable=False,
            updateable=False,
            defaulted=True,
        ),
        picklist_field("Type", "Account Type", ACCOUNT_TYPES),
        picklist_field("Industry", "Industry", INDUSTRIES),
        picklist_field("Rating", "Account Rating", RATINGS),
        *address_fields("Billing"),
        text_field("Phone", "Account Phone", 40, type="phone"),
        text_field("Website", "Website", type="url"),
        number_field("AnnualRevenue", "Annual Revenue", "currency"),
        number_field("NumberOfEmployees", "Employees", "int", precision=8, scale=0),
        text_field("Description", "Account Description", 32000, type="textarea"),
        text_field(
            "External_Id__c", "External Id", 64, unique=True, id_lookup=True, external_id=True
        ),
        picklist_field("Tier__c", "Tier", TIERS),
        picklist_field("Regions__c", "Regions", REGIONS, multi=True),
        FieldDef("Is_Active__c", "boolean", "Active", nillable=False, defaulted=True),
        number_field("Health_Score__c", "Health Score", "double", precision=5, scale=1),
        number_field("Churn_Risk__c", "Churn Risk", "percent", precision=5, scale=2),
        FieldDef("Renewal_Date__c", "date", "Renewal Date"),
        text_field("Billing_Email__c", "Billing Email", 80, type="email"),
        FieldDef(
            "Revenue_Per_Employee__c",
            "currency",
            "Revenue per Employee",
            createable=False,
            updateable=False,
            calculated=True,
            precision=18,
            scale=2,
            formula="IF(NumberOfEmployees > 0, AnnualRevenue / NumberOfEmployees, NULL)",
            derive=revenue_per_employee,
        ),
    ),
)

CONTACT = ObjectDef(
    "Contact",
    "Contact",
    "Contacts",
    "003",
    (
        *system_fields("Contact"),
        lookup_field("AccountId", "Account ID", "Account", "Account"),
        FieldDef(
            "Salutation", "picklist", "Salutation", length=40, picklist=SALUTATIONS, compound="Name"
        ),
        text_field("FirstName", "First Name", 40, compound="Name"),
        text_field("LastName", "Last Name", 80, nillable=False, compound="Name"),
        FieldDef(
            "Name",
            "string",
            "Full Name",
            length=121,
            nillable=False,
            createable=False,
            updateable=False,
            name_field=True,
            id_lookup=True,
            derive=full_name,
            extra_type_info="personname",
        ),
        text_field("Email", "Email", 80, type="email", id_lookup=True),
        text_field("Phone", "Business Phone", 40, type="phone"),
        text_field("Title", "Title", 128),
        text_field("Department", "Department", 80),
        picklist_field("LeadSource", "Lead Source", LEAD_SOURCES),
        FieldDef("Birthdate", "date", "Birthdate"),
        FieldDef("HasOptedOutOfEmail", "boolean", "Email Opt Out", nillable=False, defaulted=True),
        # Set by Salesforce from the contact's activities; change events never carry it.
        FieldDef("LastActivityDate", "date", "Last Activity", createable=False, updateable=False),
    ),
)

OPPORTUNITY = ObjectDef(
    "Opportunity",
    "Opportunity",
    "Opportunities",
    "006",
    (
        *system_fields("Opportunity"),
        lookup_field("AccountId", "Account ID", "Account", "Account"),
        text_field("Name", "Name", 120, nillable=False, name_field=True),
        FieldDef("StageName", "picklist", "Stage", length=255, nillable=False, picklist=STAGES),
        number_field("Amount", "Amount", "currency"),
        number_field("Probability", "Probability (%)", "percent", precision=3, scale=0),
        FieldDef("CloseDate", "date", "Close Date", nillable=False),
        picklist_field("Type", "Opportunity Type", ("New Business", "Existing Business")),
        FieldDef("IsClosed", "boolean", "Closed", nillable=False, defaulted=True),
        FieldDef("IsWon", "boolean", "Won", nillable=False, defaulted=True),
        # Set by Salesforce from the opportunity's activities; change events never carry it.
        FieldDef("LastActivityDate", "date", "Last Activity", createable=False, updateable=False),
    ),
)

PLAN = ObjectDef(
    "Plan__c",
    "Plan",
    "Plans",
    "a0B",
    (
        *system_fields("Plan"),
        text_field("Name", "Plan Name", 80, nillable=False, name_field=True),
        lookup_field("Account__c", "Account", "Account", "Account__r"),
        text_field("Plan_Code__c", "Plan Code", 32, unique=True, id_lookup=True, external_id=True),
        picklist_field("Tier__c", "Tier", TIERS),
        picklist_field("Features__c", "Features", FEATURES, multi=True),
        number_field("Seats__c", "Seats", "double", precision=9, scale=0),
        number_field("Monthly_Price__c", "Monthly Price", "currency"),
        FieldDef("Active__c", "boolean", "Active", nillable=False, defaulted=True),
        FieldDef("Start_Date__c", "date", "Start Date"),
        FieldDef("Trial_Ends__c", "datetime", "Trial Ends"),
        text_field("Portal_Url__c", "Portal URL", type="url"),
    ),
)

OBJECTS: dict[str, ObjectDef] = {o.name: o for o in (ACCOUNT, CONTACT, OPPORTUNITY, PLAN)}
OBJECTS_BY_LOWER: dict[str, ObjectDef] = {name.lower(): o for name, o in OBJECTS.items()}
OBJECTS_BY_PREFIX: dict[str, ObjectDef] = {o.key_prefix: o for o in OBJECTS.values()}


def find_object(name: str) -> ObjectDef | None:
    """Object names are case-insensitive, as in SOQL and REST paths."""
    return OBJECTS_BY_LOWER.get(name.lower())


def _fields_by_type() -> dict[str, tuple[tuple[str, str], ...]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for obj in OBJECTS.values():
        for field in obj.fields:
            kind = "formula" if field.calculated else field.type
            found.setdefault(kind, []).append((obj.name, field.name))
    return {kind: tuple(pairs) for kind, pairs in sorted(found.items())}


# Every field type of the sandbox (formula fields under "formula") -> its (object, field) pairs.
FIELD_TYPES: dict[str, tuple[tuple[str, str], ...]] = _fields_by_type()
