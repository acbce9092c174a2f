"""Mapping setup: the form, validation on every change, import and export.

Validation is :func:`pipeline.config.validation.validate_document`, the code of
``sfamp config validate``; export writes :func:`pipeline.config.validation.dump_mapping`,
the bytes of ``sfamp config export``. Nothing here is saved: Next leads to the
final verification (:mod:`pipeline.console.pages_verify`), whose Save publishes.

The page's requests (validation, structural changes) are answered with out-of-band
parts only (``_mapping_update.html``): the failure list, each control's message and
what a structural change redraws, never a control the person may be using. Whether
the form validates travels in the ``HX-Trigger-After-Swap`` header, from which
console.js sets Next's state on the same button.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from pipeline.config.checks import UNREADABLE
from pipeline.config.validation import dump_mapping, validate_document
from pipeline.config.verify import message_of
from pipeline.console.catalog import FieldOption, ObjectOption
from pipeline.console.context import (
    Console,
    console_of,
    form_fields,
    is_htmx,
    redirect_get,
    render,
    text_fields,
)
from pipeline.console.forms import (
    CADENCE_MODES,
    ON_DELETE,
    RECONCILE_MODES,
    Change,
    MappingForm,
    control_ids,
    form_from_document,
    form_from_fields,
    in_form_order,
    left_out_by_form,
    messages_by_control,
)
from pipeline.errors import MappingError, Problem, SfampError
from pipeline.kafka.config_topic import stored_revision, stored_text
from pipeline.kafka.inspect import quick_settings
from pipeline.wording import nearest

EXPORT_NAME: Final = "sfamp-mapping.json"
MAX_IMPORT_BYTES: Final = 1 << 20
VALIDATED_EVENT: Final = "sfamp-validated"
FOCUS_EVENT: Final = "sfamp-focus"  # the control the keyboard moves to after a change
NOT_A_MAPPING: Final = "the file must hold a JSON object with version and mappings"


def checked(console: Console, form: MappingForm) -> tuple[dict[str, Any], list[Problem]]:
    """The form's document and its problems, as ``sfamp config validate`` reports them."""
    document = form.document()
    _, problems = validate_document(
        document, max_group_types=console.settings.amplitude.max_group_types
    )
    return document, in_form_order(problems)


def config_text(document: dict[str, Any], problems: list[Problem]) -> str:
    """What Copy and Export give: the normalized export when valid, else the draft as it is."""
    if not problems:
        model, _ = validate_document(document)
        if model is not None:
            return dump_mapping(model)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode()


def failures_view(
    console: Console, form: MappingForm, extra: list[Problem] | None = None
) -> dict[str, Any]:
    """The form's failures, by control, and its JSON: what a validation answer shows."""
    document, problems = checked(console, form)
    problems = [*(extra or []), *problems]
    return {
        "form": form,
        "problems": problems,
        "messages": messages_by_control(problems, form),
        "control_ids": control_ids(form),
        "config_json": config_text(document, problems),
    }


async def org_choices(
    console: Console, form: MappingForm, *, fetch: bool = True
) -> tuple[list[ObjectOption] | None, dict[str, list[FieldOption] | None]]:
    """The org's objects and each section's object's fields (None: the org offers none).
    The describes are cached (:mod:`pipeline.console.catalog`); ``fetch=False`` takes only
    what the cache holds, so that a slow org never holds up a keystroke's validation."""
    catalog = console.catalog
    objects = await catalog.objects(fetch=fetch)
    fields = {
        s.sfdc_object: await catalog.fields(s.sfdc_object, fetch=fetch) for s in form.sections
    }
    return objects, fields


def org_problems(
    form: MappingForm,
    objects: list[ObjectOption] | None,
    fields: Mapping[str, list[FieldOption] | None],
) -> list[Problem]:
    """The names the org does not know (an object not in it, a field not on its object,
    either spelt in another case), said as Final verification says them, so that each
    shows beside its control before Next. None when the org offers no choices (no
    credentials, no answer): verification tells why."""
    if objects is None:
        return []
    in_org = {o.name.lower(): o.name for o in objects}
    problems: list[Problem] = []
    for m, section in enumerate(form.sections):
        sfdc_object = section.sfdc_object
        if not sfdc_object:
            continue
        spelled = in_org.get(sfdc_object.lower())
        if spelled != sfdc_object:
            problems.append(
                Problem(f"$.mappings[{m}].sfdc_object", _unknown("object", sfdc_object, in_org))
            )
        listed = fields.get(sfdc_object)
        if spelled is None or listed is None:
            continue
        on_object = {f.name.lower(): f.name for f in listed}
        named = [("group_name_field", section.group_name_field)]
        named += [
            (f"group_properties[{p}].sfdc_field", r.sfdc_field) for p, r in enumerate(section.rows)
        ]
        for where, name in named:
            if name and on_object.get(name.lower()) != name:
                message = _unknown("field", name, on_object, on=sfdc_object)
                problems.append(Problem(f"$.mappings[{m}].{where}", message))
    return problems


def _unknown(kind: str, name: str, known: Mapping[str, str], *, on: str | None = None) -> str:
    """Why the org does not know ``name``: spelt in another case, or not there."""
    spelled = known.get(name.lower())
    if spelled is not None:
        return f"spell it {spelled}: names in change events are case-sensitive"
    where = "in this org" if on is None else f"on {on}"
    close = nearest(name, known.values(), cutoff=0.8)
    hint = f" (did you mean {close}?)" if close else ""
    return f"no {kind} {name} {where}{hint}" + (f", or it is {UNREADABLE}" if on else "")


async def form_view(
    console: Console, form: MappingForm, extra: list[Problem] | None = None
) -> dict[str, Any]:
    """Everything the form template needs: values, choices from the org, failures (the
    org's among them)."""
    objects, fields = await org_choices(console, form)
    extra = [*(extra or []), *org_problems(form, objects, fields)]
    return {
        **failures_view(console, form, extra),
        "objects": objects,
        "object_names": {o.name for o in objects or ()},
        "fields": fields,
        "catalog_problem": console.catalog.problem if objects is None else None,
        "cadence_modes": CADENCE_MODES,
        "reconcile_modes": RECONCILE_MODES,
        "on_delete_policies": ON_DELETE,
    }


def base_revision_of(fields: Mapping[str, object]) -> int:
    """The revision the form was loaded from (0: none was published), which Save requires
    to be still the current one."""
    value = fields.get("base_revision")
    return int(value) if isinstance(value, str) and value.isdigit() else 0


async def _published_form(console: Console) -> tuple[MappingForm, int, str | None]:
    """The published mapping as a form (to edit it) and its revision, or an empty form
    and why."""
    try:
        stored = await stored_revision(quick_settings(console.settings.kafka))
    except SfampError as exc:
        return MappingForm(), 0, f"the published mapping could not be read: {exc}"
    published = stored.published
    if stored.problem is not None:  # Save replaces it: the form is based on its revision
        form = form_from_document(stored.document)  # as written, to be put right
        return form, stored.revision, f"{message_of(stored.problem)}; Save replaces it"
    if published is None:
        return MappingForm(), 0, None
    form = form_from_document(published.mapping.model_dump(mode="json"))
    return form, published.revision, None


async def form_page(
    request: web.Request,
    form: MappingForm,
    *,
    base_revision: int,
    status: int = 200,
    extra: list[Problem] | None = None,
    notice: str | None = None,
    error: str | None = None,
    unsent: bool = True,
) -> web.Response:
    """The Mapping setup page (or, for htmx, its form) holding ``form``; ``unsent``: it
    holds edits not published (an import, a draft, a form sent back), which the page
    asks about before it is left (console.js)."""
    view = await form_view(console_of(request), form, extra)
    template = "_mapping_form.html" if is_htmx(request) else "mapping.html"
    return render(
        request,
        template,
        status=status,
        base_revision=base_revision,
        notice=notice,
        error=error,
        unsent=unsent,
        **view,
    )


async def mapping_page(request: web.Request) -> web.Response:
    form, revision, error = await _published_form(console_of(request))
    return await form_page(request, form, base_revision=revision, error=error, unsent=False)


async def _update(
    request: web.Request, form: MappingForm, change: Change | None = None
) -> web.Response:
    """The failure list, each control's messages and what ``change`` redraws, out of band.

    Only a change draws controls, so only a change asks the org for its choices.
    """
    console = console_of(request)
    if change:
        view = await form_view(console, form)
    else:
        # What the org said when the form drew its choices: asked again only by a change.
        choices = await org_choices(console, form, fetch=False)
        view = failures_view(console, form, org_problems(form, *choices))
    response = render(request, "_mapping_update.html", change=change, **view)
    events: dict[str, Any] = {VALIDATED_EVENT: {"valid": not view["problems"]}}
    focus = _focus_after(change)
    if focus:
        events[FOCUS_EVENT] = {"ids": focus}
    response.headers["HX-Trigger-After-Swap"] = orjson.dumps(events).decode()
    return response


def _focus_after(change: Change | None) -> list[str]:
    """Where the keyboard goes after an addition or a removal, the first of these ids that
    can take it: the new part's first control (a row's field list waits for its object),
    or the button that adds one again (the one pressed is gone)."""
    if change is None:
        return []
    s, r = change.section, change.row
    return {
        "add_mapping": [f"m{s}-sfdc_object"],
        "add_property": [f"m{s}-p{r}-sfdc_field", f"m{s}-p{r}-amplitude_property"],
        "remove_property": [f"m{s}-add_property"],
        "remove_mapping": ["add_mapping"],
    }.get(change.kind, [])


async def validate(request: web.Request) -> web.Response:
    """Every change of a control: the failures and Next's state, the controls untouched."""
    return await _update(request, form_from_fields(await form_fields(request)))


async def change_form(request: web.Request) -> web.Response:
    """A structural change (add or remove a section or row, a new object or schedule mode):
    only that part is redrawn. Without htmx (no script) the whole page is."""
    fields = await form_fields(request)
    form = form_from_fields(fields)
    change = form.apply(fields.get("action", ""))
    if not is_htmx(request):
        return await form_page(request, form, base_revision=base_revision_of(fields))
    return await _update(request, form, change)


def read_import(raw: bytes) -> dict[str, Any]:
    """The mapping document an imported file holds; MappingError says in one line why a
    file is not one (a document with validation problems is one: the form shows them)."""
    if len(raw) > MAX_IMPORT_BYTES:
        raise MappingError("the file is over 1 MB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MappingError("the file is not UTF-8 text") from exc
    if not text.strip():
        raise MappingError("the file is empty")
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise MappingError(f"the file is not JSON ({exc.msg} at {where})") from exc
    if not isinstance(document, dict):
        raise MappingError(NOT_A_MAPPING)
    left_out = left_out_by_form(document)
    if left_out:
        raise MappingError(_left_out_line(document, left_out))
    return document


def _left_out_line(document: dict[str, Any], paths: list[str]) -> str:
    """Why the form cannot hold a document, in one line: the validator's word on the
    first part it would leave out (a misspelt key gets its "did you mean"), and how
    many more there are. Filling the form anyway would publish something else."""
    _, problems = validate_document(document)
    first = paths[0]
    # The problem at that path, or else at the first part inside it (a list's entry).
    said = [p for p in problems if p.path == first] or [
        p for p in problems if p.path.startswith((f"{first}[", f"{first}."))
    ]
    line = f"{said[0].path} {said[0].message}" if said else f"{first} has no place in the form"
    more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
    return line + more


async def import_config(request: web.Request) -> web.Response:
    """Fill the form from an uploaded file (or the draft sent back from verification).

    A file that is not a mapping document leaves the form as it was: htmx does not swap
    a 422, and console.js shows its one line. Without script the page is drawn again
    from the published mapping, with that line.
    """
    posted = await request.post()
    base = base_revision_of(posted)
    upload = posted.get("file")
    if isinstance(upload, web.FileField):
        raw = upload.file.read(MAX_IMPORT_BYTES + 1)
    else:
        raw = str(posted.get("mapping", "")).encode()
    try:
        document = read_import(raw)
    except MappingError as exc:
        line = f"Import config: {exc}; the form is unchanged."
        if is_htmx(request):
            return web.Response(status=422, text=line + "\n")
        form, revision, _ = await _published_form(console_of(request))
        return await form_page(request, form, base_revision=revision, status=422, error=line)
    form = form_from_document(document)
    notice = "imported: not saved yet" if upload is not None else "your draft: not saved yet"
    return await form_page(request, form, base_revision=base, notice=notice)


async def export_config(request: web.Request) -> web.Response:
    """Download the form's mapping (its fields in the query) or else the published one."""
    console = console_of(request)
    query = text_fields(request.query)
    if "cadence_mode" in query:
        document, problems = checked(console, form_from_fields(query))
        text = config_text(document, problems)
    else:
        try:
            stored = await stored_revision(quick_settings(console.settings.kafka))
        except SfampError as exc:
            raise web.HTTPServiceUnavailable(text=f"{str(exc).splitlines()[0]}\n") from exc
        if stored.revision == 0 and stored.document is None:
            raise web.HTTPNotFound(text="no mapping is published yet\n")
        text = stored_text(stored)
    return web.Response(
        text=text,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{EXPORT_NAME}"'},
    )


def register(app: web.Application) -> None:
    app.router.add_get("/mapping", mapping_page)
    app.router.add_post("/mapping/validate", validate)
    app.router.add_post("/mapping/form", change_form)
    app.router.add_post("/mapping/import", import_config)
    app.router.add_get("/mapping/export", export_config)
    # Only POSTs answer there: a GET (a bookmark, a typed address) goes to the form.
    for path in ("/mapping/validate", "/mapping/form", "/mapping/import"):
        app.router.add_get(path, redirect_get("/mapping"))
