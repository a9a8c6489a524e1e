"""The authorization matrix: every route of the app, asked by every kind of principal, with the answer each
must get, on SQLite and on PostgreSQL (the app as a normal role under Row-Level Security, ``require_rls``).

Organisation A has two divisions, D1 and D2, and these principals (``PRINCIPALS``):

* ``owner``: the bootstrap owner's API key (an unscoped owner, and the platform admin);
* ``admin``: an unscoped admin; ``div_admin``: an admin of D1;
* ``member``: an unscoped member; ``viewer``: an unscoped viewer; ``div_member``: a member of D1;
  ``d2_member``: a member of D2 (each of these logs in with a password and acts with its access token);
* ``key``: a key without a user (``atrium keys create`` without ``--user``), role member;
* ``other``: the owner of organisation B (logged in); ``anonymous``: no credential (``allow_anonymous`` off).

The objects asked about belong to the member unless said otherwise: a conversation with messages, a query
record, an upload job, a private collection ``m-private`` with a document, the organisation's ``org-docs``
collection with a document; and the D1 member's division collection ``d1-docs`` with a document, and its
conversation. Writes act on a fresh object per principal (a conversation, document, collection, key, user,
division, budget made for that one request) or are no-ops (a PATCH to the current value), so one
principal's success does not change the next one's answer; principals ask from the least to the most
powerful, the owner last. Actions on oneself (``DELETE /api/v1/me``, ``POST /api/v1/auth/revoke``) are
asked by a fresh user with the principal's role and division.

``MATRIX`` is the table: one line per route (a route may have more lines, ``"METHOD path #variant"``, for
other targets), one expected HTTP status per principal. ``PROBES`` says how each line asks and what it
checks in the answer besides the status (lists and searches: what must and must not be in them; refused
writes: the victim's data unchanged; every answer to ``other``: none of A's ids or secret words).
``test_every_route_has_a_matrix_row`` fails for a route of the app without a line, and for a line whose
route no longer exists. ``WS /ws`` is asked over a real socket (uvicorn on loopback): a WebSocket answer
counts as 200 when the chat ends ``done``, as the HTTP status of its ``error`` event's code otherwise, and
as ``code - 4000`` when the socket is closed before ``ready``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from atrium.accounts.admin import KeySpec, administer
from atrium.accounts.principal import Principal
from atrium.gateway.providers.fake import FakeChatModel
from atrium.store.models import (
    Collection,
    Conversation,
    Invitation,
    Membership,
    Message,
    NotificationDevice,
    Organization,
    UsageRecord,
    UsageReset,
    User,
    Webhook,
)
from tests.api.artifact_helpers import artifact_or_grounded
from tests.api.authz_helpers import (
    BACKENDS,
    app_routes,
    backend_settings,
    client_for,
    password_hash,
    ws_exchange,
)
from tests.api.helpers import upload, wait_job
from tests.conftest import ADMIN_KEY, LiveServer, RunningApp, free_port, start_app
from tests.push_servers import NOTIFICATIONS_FOR_TESTS, browser_subscription
from tests.tenancy_helpers import create_tenant

# The matrix's columns, and the order principals ask in (least powerful first, the owner last).
COLUMNS = ("owner", "admin", "div_admin", "member", "viewer", "div_member", "d2_member", "key", "other",
           "anonymous")
ORDER = ("anonymous", "other", "viewer", "key", "d2_member", "member", "div_member", "div_admin", "admin", "owner")
USERS = {  # the principals that are users of A who log in: role and division ("D1", "D2" or None)
    "admin": ("admin", None), "div_admin": ("admin", "D1"), "member": ("member", None),
    "viewer": ("viewer", None), "div_member": ("member", "D1"), "d2_member": ("member", "D2"),
}
IN_A = ("owner", *USERS, "key")
D1_READERS = {"owner", "admin", "div_admin", "div_member"}  # unscoped admins and D1
PASSWORD = "matrix-password-1"
ORG_B = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"
ORG_C = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
# Words that are in one of A's documents only: an answer to another organisation must never hold them.
ORG_WORD, D1_WORD, PRIVATE_WORD = "quokka", "narwhal", "axolotl"
ORG_DOC = f"# Org handbook\n\nThe org handbook mentions the {ORG_WORD} of the whole organisation.\n"
D1_DOC = f"# Division handbook\n\nThe division handbook mentions the {D1_WORD} of division one.\n"
PRIVATE_DOC = f"# Private handbook\n\nThe private handbook mentions the {PRIVATE_WORD} of the member.\n"
QUESTION = "What does the handbook say?"
ARTIFACT_WORD, ARTIFACT_TITLE = "matrixartifact", "Matrix {}"
ARTIFACT_READERS = {"art_org": set(IN_A), "art_d1": D1_READERS, "art_private": {"member"}}
POLICY = {"output": {"link_domains": ["matrix.example"]}}
WS_STATUS = {"not_found": 404, "forbidden": 403, "unauthorized": 401, "invalid_request": 422, "conflict": 409,
             "rate_limited": 429, "budget_exceeded": 402}

# --- The matrix ----------------------------------------------------------------------------------------------
# One expected status per principal, in COLUMNS order.
#                                                                 own  adm  dad  mem  vie  dme  d2m  key  oth  ano
_ALL_200 = (200, 200, 200, 200, 200, 200, 200, 200, 200, 200)
_SIGNED_IN = (200, 200, 200, 200, 200, 200, 200, 200, 200, 401)
_MEMBERS_OWN = (404, 404, 404, 200, 404, 404, 404, 404, 404, 401)  # the member's private object
_D1_READ = (200, 200, 200, 404, 404, 200, 404, 404, 404, 401)  # D1's collection, its documents
_ADMINS = (200, 200, 200, 403, 403, 403, 403, 403, 200, 401)  # any admin, each of its own organisation
MATRIX: dict[str, tuple[int, ...]] = {
    # Public: liveness, metrics and the API's description.
    "GET /health":                                                 _ALL_200,
    "GET /ready":                                                  _ALL_200,
    "GET /metrics":                                                _ALL_200,
    "GET /openapi.json":                                           _ALL_200,
    "GET /docs":                                                   _ALL_200,
    "GET /docs/oauth2-redirect":                                   _ALL_200,
    "GET /redoc":                                                  _ALL_200,
    # The playground page (its API calls carry the signed-in user's credential).
    "GET /":                                                       _ALL_200,
    "GET /playground/{name}":                                      _ALL_200,
    # The model gateway: every caller of its own organisation.
    "POST /v1/chat/completions":                                   _SIGNED_IN,
    "POST /v1/messages":                                           _SIGNED_IN,
    "POST /v1/embeddings":                                         _SIGNED_IN,
    "GET /v1/models":                                              _SIGNED_IN,
    "GET /v1/models/{model_id:path}":                              _SIGNED_IN,
    # Conversations and chat: private to their owner, for every role.
    "GET /api/v1/conversations":                                   _SIGNED_IN,
    "GET /api/v1/conversations/{conversation_id}":                 _MEMBERS_OWN,
    "GET /api/v1/conversations/{conversation_id}/messages":        _MEMBERS_OWN,
    "DELETE /api/v1/conversations/{conversation_id}":             (404, 404, 404, 204, 403, 404, 404, 404, 404, 401),
    "PATCH /api/v1/conversations/{conversation_id}":              (404, 404, 404, 200, 403, 404, 404, 404, 404, 401),
    "GET /api/v1/conversations/{conversation_id}/messages/{message_id}/stream": _MEMBERS_OWN,
    "GET /api/v1/sync":                                            _SIGNED_IN,  # changes of one's own only
    "POST /api/v1/chat/ask":                                       _MEMBERS_OWN,  # into the member's conversation
    "POST /api/v1/chat/ask #stream":                               _MEMBERS_OWN,  # the same, answered as SSE
    "POST /api/v1/chat/ask #plain":                                _SIGNED_IN,  # sources: readable documents only
    "WS /ws":                                                      _MEMBERS_OWN,  # into the member's conversation
    "WS /ws #plain":                                               _SIGNED_IN,
    "GET /api/v1/admin/conversations":                             _ADMINS,
    "DELETE /api/v1/admin/conversations/{conversation_id}":       (204, 204, 204, 403, 403, 403, 403, 403, 404, 401),
    "DELETE /api/v1/admin/conversations/{conversation_id} #unscoped": (
                                                                   204, 204, 404, 403, 403, 403, 403, 403, 404, 401),
    # One-shot queries.
    "POST /api/v1/query":                                         (201, 201, 201, 201, 201, 201, 201, 201, 201, 401),
    # The first front ends' body names the user: only the caller itself (no acting for another user).
    "POST /api/v1/query #user_id":                                (403, 403, 403, 201, 403, 403, 403, 403, 403, 401),
    "GET /api/v1/query/{record_id}":                               _MEMBERS_OWN,
    # Documents, jobs and search follow the collections' visibility.
    "GET /api/v1/documents":                                       _SIGNED_IN,
    "GET /api/v1/documents #d1":                                   _D1_READ,
    "GET /api/v1/documents/{document_id}":                         _D1_READ,
    "GET /api/v1/documents/{document_id} #private":                _MEMBERS_OWN,
    "GET /api/v1/documents/{document_id} #org":                   (200, 200, 200, 200, 200, 200, 200, 200, 404, 401),
    "DELETE /api/v1/documents/{document_id}":                     (204, 204, 204, 404, 403, 204, 404, 404, 404, 401),
    "DELETE /api/v1/documents/{document_id} #org":                (204, 204, 204, 204, 403, 204, 204, 204, 404, 401),
    "POST /api/v1/documents":                                     (202, 202, 202, 409, 403, 202, 409, 409, 202, 401),
    "POST /api/v1/documents #private":                            (409, 409, 409, 202, 403, 409, 409, 409, 202, 401),
    # The JSON body {url} (knowledge/web): who may write decides first; the loopback URL is then refused by
    # the egress guard (422 url_not_allowed) for every caller who may write the collection.
    "POST /api/v1/documents #url":                                (422, 422, 422, 409, 403, 422, 409, 409, 422, 401),
    "POST /api/v1/documents #url-private":                        (409, 409, 409, 422, 403, 409, 409, 409, 422, 401),
    "GET /api/v1/jobs/{job_id}":                                   _MEMBERS_OWN,
    "POST /api/v1/jobs/{job_id}/cancel":                           _MEMBERS_OWN,  # an ended job: left as it is
    "POST /api/v1/search/semantic":                                _SIGNED_IN,
    "POST /api/v1/search/semantic #vector":                        _SIGNED_IN,
    "POST /api/v1/search/semantic #d1":                            _D1_READ,
    # Collections.
    "GET /api/v1/collections":                                     _SIGNED_IN,
    "POST /api/v1/collections":                                   (201, 201, 201, 201, 403, 201, 201, 201, 201, 401),
    "POST /api/v1/collections #org":                              (201, 201, 201, 201, 403, 403, 403, 201, 201, 401),
    "POST /api/v1/collections #taken":                            (409, 409, 409, 409, 403, 409, 409, 409, 201, 401),
    "GET /api/v1/collections/{name}":                              _D1_READ,
    "GET /api/v1/collections/{name} #private":                     _MEMBERS_OWN,
    "GET /api/v1/collections/{name} #org":                        (200, 200, 200, 200, 200, 200, 200, 200, 404, 401),
    "PATCH /api/v1/collections/{name}":                           (200, 200, 200, 404, 403, 200, 404, 404, 404, 401),
    "PATCH /api/v1/collections/{name} #private":                  (404, 404, 404, 200, 403, 404, 404, 404, 404, 401),
    "PATCH /api/v1/collections/{name} #org":                      (200, 200, 403, 200, 403, 403, 403, 403, 404, 401),
    "DELETE /api/v1/collections/{name}":                          (204, 204, 204, 404, 403, 204, 404, 404, 404, 401),
    # Artifacts: shared like collections (private by default); only their owner or an admin over them changes them.
    "POST /api/v1/artifacts/generate":                            (201, 201, 201, 201, 403, 201, 201, 201, 201, 401),
    "POST /api/v1/artifacts":                                     (201, 201, 201, 201, 403, 201, 201, 201, 201, 401),
    "POST /api/v1/artifacts #org":                                (201, 201, 201, 201, 403, 403, 403, 201, 201, 401),
    "GET /api/v1/artifacts":                                       _SIGNED_IN,
    "POST /api/v1/artifacts/search":                               _SIGNED_IN,
    "GET /api/v1/artifacts/{artifact_id}":                         _D1_READ,
    "GET /api/v1/artifacts/{artifact_id} #private":                _MEMBERS_OWN,
    "GET /api/v1/artifacts/{artifact_id} #org":                   (200, 200, 200, 200, 200, 200, 200, 200, 404, 401),
    "GET /api/v1/artifacts/{artifact_id}/versions":                _D1_READ,
    "GET /api/v1/artifacts/{artifact_id}/versions/{number}":       _D1_READ,
    "GET /api/v1/artifacts/{artifact_id}/versions/{number} #private": _MEMBERS_OWN,
    "GET /api/v1/artifacts/{artifact_id}/export":                  _D1_READ,
    "PATCH /api/v1/artifacts/{artifact_id}":                      (200, 200, 200, 404, 403, 200, 404, 404, 404, 401),
    "PATCH /api/v1/artifacts/{artifact_id} #private":             (404, 404, 404, 200, 403, 404, 404, 404, 404, 401),
    "PATCH /api/v1/artifacts/{artifact_id} #org":                 (200, 200, 403, 200, 403, 403, 403, 403, 404, 401),
    "DELETE /api/v1/artifacts/{artifact_id}":                     (204, 204, 204, 404, 403, 204, 404, 404, 404, 401),
    # Account administration.
    "GET /api/v1/admin/org":                                       _ADMINS,
    "GET /api/v1/admin/orgs":                                     (200, 403, 403, 403, 403, 403, 403, 403, 403, 401),
    "POST /api/v1/admin/orgs":                                    (201, 403, 403, 403, 403, 403, 403, 403, 403, 401),
    "GET /api/v1/admin/divisions":                                 _ADMINS,
    "POST /api/v1/admin/divisions":                               (201, 201, 403, 403, 403, 403, 403, 403, 201, 401),
    "DELETE /api/v1/admin/divisions/{division_id}":               (204, 204, 403, 403, 403, 403, 403, 403, 404, 401),
    "GET /api/v1/admin/users":                                     _ADMINS,
    "POST /api/v1/admin/users":                                   (201, 201, 201, 403, 403, 403, 403, 403, 404, 401),
    "POST /api/v1/admin/users #owner":                            (201, 403, 403, 403, 403, 403, 403, 403, 201, 401),
    "GET /api/v1/admin/users/{user_id}":                          (200, 200, 200, 403, 403, 403, 403, 403, 404, 401),
    "GET /api/v1/admin/users/{user_id} #unscoped":                (200, 200, 404, 403, 403, 403, 403, 403, 404, 401),
    "PATCH /api/v1/admin/users/{user_id}":                        (200, 200, 200, 403, 403, 403, 403, 403, 404, 401),
    "PATCH /api/v1/admin/users/{user_id} #unscoped":              (200, 200, 404, 403, 403, 403, 403, 403, 404, 401),
    "DELETE /api/v1/admin/users/{user_id}":                       (204, 204, 204, 403, 403, 403, 403, 403, 404, 401),
    "POST /api/v1/admin/memberships":                             (202, 202, 202, 403, 403, 403, 403, 403, 202, 401),
    "POST /api/v1/admin/memberships #existing":                   (202, 202, 202, 403, 403, 403, 403, 403, 202, 401),
    "DELETE /api/v1/admin/memberships/{user_id}":                 (204, 204, 204, 403, 403, 403, 403, 403, 404, 401),
    # Invitations: admins invite (the same answer whatever the email; never the owner role); only the
    # invited user answers.
    "POST /api/v1/admin/invitations":                             (202, 202, 202, 403, 403, 403, 403, 403, 202, 401),
    "POST /api/v1/admin/invitations #existing":                   (202, 202, 202, 403, 403, 403, 403, 403, 202, 401),
    "POST /api/v1/admin/invitations #owner":                      (403, 403, 403, 403, 403, 403, 403, 403, 403, 401),
    "POST /api/v1/admin/invitations #member":                     (409, 409, 202, 403, 403, 403, 403, 403, 202, 401),
    "GET /api/v1/admin/invitations":                               _ADMINS,
    "DELETE /api/v1/admin/invitations/{invitation_id}":           (204, 204, 204, 403, 403, 403, 403, 403, 404, 401),
    "DELETE /api/v1/admin/invitations/{invitation_id} #unscoped": (204, 204, 404, 403, 403, 403, 403, 403, 404, 401),
    "GET /api/v1/invitations":                                    (200, 200, 200, 200, 200, 200, 200, 403, 200, 401),
    "POST /api/v1/invitations/{invitation_id}/accept":            (404, 404, 404, 200, 404, 404, 404, 403, 404, 401),
    "POST /api/v1/invitations/{invitation_id}/decline":           (404, 404, 404, 200, 404, 404, 404, 403, 404, 401),
    "GET /api/v1/admin/service-accounts":                          _ADMINS,
    "POST /api/v1/admin/service-accounts":                        (201, 201, 201, 403, 403, 403, 403, 403, 201, 401),
    "GET /api/v1/admin/keys":                                      _ADMINS,
    "POST /api/v1/admin/keys":                                    (201, 201, 201, 403, 403, 403, 403, 403, 201, 401),
    "POST /api/v1/admin/keys #unscoped":                          (201, 201, 404, 403, 403, 403, 403, 403, 404, 401),
    "DELETE /api/v1/admin/keys/{key_id}":                         (204, 204, 204, 403, 403, 403, 403, 403, 404, 401),
    "POST /api/v1/admin/keys/{key_id}/rotate":                    (201, 201, 201, 403, 403, 403, 403, 403, 404, 401),
    "GET /api/v1/admin/audit":                                    (200, 200, 403, 403, 403, 403, 403, 403, 200, 401),
    # Budgets and the guard policy: org-wide settings need an unscoped admin.
    "PUT /api/v1/admin/budgets":                                  (200, 200, 403, 403, 403, 403, 403, 403, 200, 401),
    "PUT /api/v1/admin/budgets #division":                        (200, 200, 200, 403, 403, 403, 403, 403, 404, 401),
    "PUT /api/v1/admin/budgets #unscoped":                        (200, 200, 403, 403, 403, 403, 403, 403, 404, 401),
    "GET /api/v1/admin/budgets":                                   _ADMINS,
    "DELETE /api/v1/admin/budgets/{budget_id}":                   (204, 204, 204, 403, 403, 403, 403, 403, 404, 401),
    "DELETE /api/v1/admin/budgets/{budget_id} #unscoped":         (204, 204, 403, 403, 403, 403, 403, 403, 404, 401),
    "POST /api/v1/admin/budgets/{budget_id}/reset":               (200, 200, 200, 403, 403, 403, 403, 403, 404, 401),
    "POST /api/v1/admin/budgets/{budget_id}/reset #org":          (200, 200, 403, 403, 403, 403, 403, 403, 404, 401),
    "GET /api/v1/budget":                                          _SIGNED_IN,
    "GET /api/v1/admin/policy":                                    _ADMINS,
    "PUT /api/v1/admin/policy":                                   (200, 200, 403, 403, 403, 403, 403, 403, 200, 401),
    "GET /api/v1/admin/gateway/breakers":                          _ADMINS,
    "POST /api/v1/admin/gateway/breakers/{provider}/reset":       (200, 403, 403, 403, 403, 403, 403, 403, 403, 401),
    # Sessions: each principal with its own credentials (a key and the anonymous caller have none).
    "POST /api/v1/auth/token":                                    (200, 200, 200, 200, 200, 200, 200, 401, 403, 401),
    "POST /api/v1/auth/refresh":                                  (200, 200, 200, 200, 200, 200, 200, 401, 200, 401),
    "POST /api/v1/auth/logout":                                   (204, 204, 204, 204, 204, 204, 204, 204, 204, 204),
    "POST /api/v1/auth/revoke":                                   (200, 200, 200, 200, 200, 200, 200, 403, 200, 401),
    # A user's own data: a user's credential (erasure: its login, not a key).
    "GET /api/v1/me/export":                                      (200, 200, 200, 200, 200, 200, 200, 403, 200, 401),
    "DELETE /api/v1/me":                                          (403, 200, 200, 200, 200, 200, 200, 403, 200, 401),
    # The agents API (LangGraph platform shape): assistants for every caller; the member's threads are its
    # own (private) or readable by A (org-visible: only the owner writes, 403 for other readers).
    "GET /assistants/{assistant_id}":                              _SIGNED_IN,
    "POST /assistants/search":                                     _SIGNED_IN,
    "GET /assistants/{assistant_id}/graph":                        _SIGNED_IN,
    "POST /threads":                                               _SIGNED_IN,
    "POST /threads/search":                                        _SIGNED_IN,
    "GET /threads/{thread_id}":                                    _MEMBERS_OWN,
    "GET /threads/{thread_id} #org":                              (200, 200, 200, 200, 200, 200, 200, 200, 404, 401),
    "PATCH /threads/{thread_id}":                                  _MEMBERS_OWN,
    "PATCH /threads/{thread_id} #org":                            (403, 403, 403, 200, 403, 403, 403, 403, 404, 401),
    "DELETE /threads/{thread_id}":                                (404, 404, 404, 204, 404, 404, 404, 404, 404, 401),
    "GET /threads/{thread_id}/state":                              _MEMBERS_OWN,
    "GET /threads/{thread_id}/state #org":                        (200, 200, 200, 200, 200, 200, 200, 200, 404, 401),
    "POST /threads/{thread_id}/state":                             _MEMBERS_OWN,
    "GET /threads/{thread_id}/state/{checkpoint_id}":              _MEMBERS_OWN,
    "GET /threads/{thread_id}/history":                            _MEMBERS_OWN,
    "POST /threads/{thread_id}/history":                           _MEMBERS_OWN,
    "POST /threads/{thread_id}/runs":                              _MEMBERS_OWN,
    "POST /threads/{thread_id}/runs #org":                        (403, 403, 403, 200, 403, 403, 403, 403, 404, 401),
    "POST /threads/{thread_id}/runs/stream":                       _MEMBERS_OWN,
    "POST /threads/{thread_id}/runs/wait":                         _MEMBERS_OWN,
    "GET /threads/{thread_id}/runs":                               _MEMBERS_OWN,
    "GET /threads/{thread_id}/runs/{run_id}":                      _MEMBERS_OWN,
    "GET /threads/{thread_id}/runs/{run_id} #org":                (200, 200, 200, 200, 200, 200, 200, 200, 404, 401),
    "POST /threads/{thread_id}/runs/{run_id}/cancel":             (404, 404, 404, 409, 404, 404, 404, 404, 404, 401),
    "GET /threads/{thread_id}/runs/{run_id}/join":                 _MEMBERS_OWN,
    "GET /threads/{thread_id}/runs/{run_id}/stream":               _MEMBERS_OWN,
    # Guided flows: private to their starter (admins included: 404); project needs a member, onboarding an
    # admin (it creates an account in the admin's organisation).
    "GET /api/v1/flows":                                           _SIGNED_IN,
    "POST /api/v1/flows/{flow_name}":                             (201, 201, 201, 201, 403, 201, 201, 201, 201, 401),
    "POST /api/v1/flows/{flow_name} #onboarding":                 (201, 201, 201, 403, 403, 403, 403, 403, 201, 401),
    "GET /api/v1/flows/{flow_id}":                                 _MEMBERS_OWN,
    "POST /api/v1/flows/{flow_id}/answer":                         _MEMBERS_OWN,
    "POST /api/v1/flows/{flow_id}/cancel":                         _MEMBERS_OWN,
    # Project records: org-visible ones for the organisation, private ones for their owner.
    "GET /api/v1/projects":                                        _SIGNED_IN,
    "GET /api/v1/projects/{project_id}":                           _MEMBERS_OWN,
    "GET /api/v1/projects/{project_id} #org":                     (200, 200, 200, 200, 200, 200, 200, 200, 404, 401),
    # Notification devices: each principal's own (the member's device: 404 to everyone else, admins too).
    "POST /api/v1/notifications/devices":                         (201, 201, 201, 201, 201, 201, 201, 201, 201, 401),
    "GET /api/v1/notifications/devices":                           _SIGNED_IN,
    "DELETE /api/v1/notifications/devices/{device_id}":           (404, 404, 404, 204, 404, 404, 404, 404, 404, 401),
    "GET /api/v1/notifications/vapid-public-key":                  _SIGNED_IN,
    # Webhooks: an organisation-wide setting of unscoped admins and owners (never a division admin).
    "POST /api/v1/webhooks":                                      (201, 201, 403, 403, 403, 403, 403, 403, 201, 401),
    "GET /api/v1/webhooks":                                       (200, 200, 403, 403, 403, 403, 403, 403, 200, 401),
    "DELETE /api/v1/webhooks/{webhook_id}":                       (204, 204, 403, 403, 403, 403, 403, 403, 404, 401),
    # Usage analytics: one's own calls for everyone; an organisation's for its organisation-wide admins (every
    # organisation's for the platform admin, the owner here); a reset by an admin over the user (div_member
    # is in D1; the member in no division).
    "GET /api/v1/analytics/user":                                  _SIGNED_IN,
    "GET /api/v1/analytics/user #csv":                             _SIGNED_IN,
    "GET /api/v1/analytics/system":                               (200, 200, 403, 403, 403, 403, 403, 403, 200, 401),
    "GET /api/v1/analytics/system #csv":                          (200, 200, 403, 403, 403, 403, 403, 403, 200, 401),
    "POST /api/v1/analytics/user/{user_id}/reset":                (200, 200, 200, 403, 403, 403, 403, 403, 404, 401),
    "POST /api/v1/analytics/user/{user_id}/reset #unscoped":      (200, 200, 404, 403, 403, 403, 403, 403, 404, 401),
}


def parse_line(line: str) -> tuple[str, str, str]:
    """``"METHOD path #variant"`` -> (method, path, variant)."""
    method, _, rest = line.partition(" ")
    path, _, variant = rest.partition(" #")
    return method, path, variant


def expected(line: str) -> dict[str, int]:
    return dict(zip(COLUMNS, MATRIX[line], strict=True))


# --- The world -----------------------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    body: Any
    text: str
    sent: str = ""  # what the request carried (ids in it are not leaks)
    values: dict[str, Any] = field(default_factory=dict)  # what the probe made or measured for its check


@dataclass
class World:
    backend: str
    running: RunningApp
    model: FakeChatModel
    live: LiveServer
    clients: dict[str, httpx.AsyncClient]
    ids: dict[str, str]
    emails: dict[str, str]
    docs: dict[str, set[str]]  # collection -> every document of A put in it (pools and uploads included)
    pools: dict[str, list[str]]  # collection -> documents kept for one deletion each
    secrets: set[str]  # what no answer to another organisation may hold
    extra_clients: list[httpx.AsyncClient] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def db(self) -> Any:
        return self.running.services.db

    @property
    def owner(self) -> httpx.AsyncClient:
        return self.clients["owner"]

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{self.backend}-{next(self.counter)}"

    def division(self, who: str) -> str | None:
        name = USERS[who][1] if who in USERS else None
        return self.ids[name] if name else None

    async def ask(self, who: str, method: str, path: str, client: httpx.AsyncClient | None = None,
                  **kwargs: Any) -> Answer:
        response = await (client or self.clients[who]).request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        sent = f"{path} {json.dumps(kwargs.get('json'))} {json.dumps(kwargs.get('params'))}"
        return Answer(response.status_code, body, response.text, sent)

    # -- fresh objects, one per request -----------------------------------------------------------------

    async def conversation(self, owner: str) -> str:
        """A new conversation of ``owner`` (a user of A) with two messages."""
        async with self.db.system_session() as session:
            conversation = Conversation(org_id=self.ids["org"], user_id=self.ids[owner],
                                        division_id=self.division(owner), title="Throwaway")
            session.add(conversation)
            await session.flush()
            session.add_all([Message(org_id=self.ids["org"], conversation_id=conversation.id, role=role,
                                     content=f"throwaway {role}") for role in ("user", "assistant")])
            return conversation.id

    async def conversation_exists(self, conversation_id: str) -> bool:
        async with self.db.system_session() as session:
            return await session.get(Conversation, conversation_id) is not None

    async def message_count(self, conversation_id: str) -> int:
        async with self.db.system_session() as session:
            return int(await session.scalar(select(func.count()).select_from(Message).where(
                Message.conversation_id == conversation_id)) or 0)

    async def user(self, *, role: str = "member", division: str | None = None, password: bool = False) -> str:
        """A new user of A (made by the owner)."""
        body: dict[str, Any] = {"email": f"{self.unique('user')}@alpha.example", "name": "Throwaway", "role": role,
                                "division_id": division}
        if password:
            body["password"] = PASSWORD
        made = await self.owner.post("/api/v1/admin/users", json=body)
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    async def user_elsewhere(self, *, seat_in_a: bool) -> tuple[str, str]:
        """A new user whose home is organisation C (optionally with a seat in A's D1): (id, email)."""
        email = f"{self.unique('guest')}@charlie.example"
        async with self.db.system_session() as session:
            user = User(org_id=ORG_C, email=email, name="Charlie Guest", role="member")
            session.add(user)
            await session.flush()
            session.add(Membership(org_id=ORG_C, user_id=user.id, role="member"))
            if seat_in_a:
                session.add(Membership(org_id=self.ids["org"], user_id=user.id, role="member",
                                       division_id=self.ids["D1"]))
            return user.id, email

    async def invitation(self, division: str | None) -> str:
        """A new pending invitation of A (made by the owner), into ``division`` (an id) or unscoped."""
        made = await self.owner.post("/api/v1/admin/invitations", json={
            "email": f"{self.unique('invitee')}@zeta.example", "division_id": division})
        assert made.status_code == 202, made.text
        return str(made.json()["id"])

    async def invitation_for_member(self) -> str:
        """A new pending invitation of organisation C addressed to the member's email."""
        async with self.db.system_session() as session:
            invitation = Invitation(org_id=ORG_C, email=self.emails["member"], role="viewer",
                                    expires_at=datetime.now(UTC) + timedelta(days=7))
            session.add(invitation)
            await session.flush()
            return invitation.id

    async def invitation_status(self, invitation_id: str) -> str:
        async with self.db.system_session() as session:
            return str(await session.scalar(select(Invitation.status).where(Invitation.id == invitation_id)))

    async def key_of(self, user: str | None) -> str:
        """A new key (made by the owner) of ``user`` (an id; None: the owner's own)."""
        body: dict[str, Any] = {"name": self.unique("key")}
        if user is not None:
            body["user_id"] = user
        made = await self.owner.post("/api/v1/admin/keys", json=body)
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    async def key_budget(self, user: str | None) -> str:
        made = await self.owner.put("/api/v1/admin/budgets", json={
            "scope": "key", "subject_id": await self.key_of(user), "period": "month", "limit_usd": "5"})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    async def device(self, owner: str) -> str:
        """A new Web Push device of ``owner`` (registered by ``owner`` itself)."""
        made = await self.clients[owner].post("/api/v1/notifications/devices", json=browser_subscription(
            f"http://127.0.0.1:9/push/{self.unique(owner)}"))
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    async def device_owners(self) -> dict[str, str | None]:
        async with self.db.system_session() as session:
            rows = await session.execute(select(NotificationDevice.id, NotificationDevice.user_id))
            return {row.id: row.user_id for row in rows}

    async def webhook(self) -> str:
        """A new webhook of A (made by the owner)."""
        made = await self.owner.post("/api/v1/webhooks", json={"url": f"http://127.0.0.1:9/hook/{self.unique('w')}"})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    async def webhook_orgs(self) -> dict[str, str]:
        async with self.db.system_session() as session:
            return {row.id: row.org_id for row in await session.execute(select(Webhook.id, Webhook.org_id))}

    async def d1_collection(self) -> str:
        name = self.unique("tmp-d1")
        made = await self.clients["div_member"].post("/api/v1/collections", json={"name": name})
        assert made.status_code == 201 and made.json()["visibility"] == "division", made.text
        return name

    async def collection_exists(self, name: str) -> bool:
        async with self.db.system_session() as session:
            return bool(await session.scalar(select(Collection.id).where(
                Collection.org_id == self.ids["org"], Collection.name == name)))

    async def session_of(self, who: str) -> httpx.AsyncClient:
        """A fresh user with ``who``'s organisation, role and division, logged in: for actions on oneself.
        The owner (its key) and the key act as themselves; the anonymous caller stays anonymous."""
        if who in ("owner", "key", "anonymous"):
            return self.clients[who]
        if who == "other":
            made = await self.clients["other"].post("/api/v1/admin/users", json={
                "email": f"{self.unique('double')}@bravo.example", "name": "Double", "role": "owner",
                "password": PASSWORD})
            assert made.status_code == 201, made.text
            email = made.json()["email"]
        else:
            role, division = USERS[who]
            made = await self.owner.post("/api/v1/admin/users", json={
                "email": f"{self.unique('double')}@alpha.example", "name": "Double", "role": role,
                "password": PASSWORD, "division_id": self.ids[division] if division else None})
            assert made.status_code == 201, made.text
            email = made.json()["email"]
        client = client_for(self.running.app, await login(self.clients["anonymous"], email))
        self.extra_clients.append(client)
        return client

    # -- what each principal may read ------------------------------------------------------------------

    def readable(self, who: str) -> set[str]:
        """A's documents ``who`` may read (from the rules: org -> all of A; d1 -> unscoped admins and D1;
        private -> the member)."""
        if who not in IN_A:
            return set()
        found = set(self.docs["org-docs"])
        if who in D1_READERS:
            found |= self.docs["d1-docs"]
        if who == "member":
            found |= self.docs["m-private"]
        return found

    def unreadable(self, who: str) -> set[str]:
        return set().union(*self.docs.values()) - self.readable(who)

    def base_readable(self, who: str) -> set[str]:
        """The one first document of each collection ``who`` may read."""
        return {self.ids[f"doc_{name}"] for name in ("org-docs", "d1-docs", "m-private")} & self.readable(who)


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: Any) -> str:
    response = await client.post("/api/v1/auth/token", json={"email": email, "password": password, **extra})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def _ingested(client: httpx.AsyncClient, files: dict[str, str], collection: str) -> tuple[str, list[str]]:
    job = await wait_job(client, (await upload(client, files, collection))["job_id"])
    assert job["status"] == "succeeded", job
    return job["id"], [d["document_id"] for d in job["result"]["documents"]]


async def _keyless_key(running: RunningApp, org_id: str) -> tuple[str, str]:
    """A key without a user, made as ``atrium keys create`` without ``--user`` makes it."""
    services = running.services
    actor = Principal(org_id=org_id, user_id=None, role="owner", via="cli")
    async with administer(services.db, services.authenticator, services.sessions.passwords, actor) as admin:
        created = await admin.create_key(org_id, KeySpec(name="key without user", role="member"))
    assert created.row.user_id is None and created.row.division_id is None
    return created.row.id, created.raw


async def _build(world: World) -> None:
    owner, ids = world.owner, world.ids
    app = world.running.app
    ids["org"] = (await owner.get("/api/v1/admin/org")).json()["id"]
    async with world.db.system_session() as session:  # the owner logs in too (POST /api/v1/auth/token)
        bootstrap = await session.scalar(select(User).where(User.email == "admin@localhost"))
        assert bootstrap is not None
        bootstrap.password_hash = await password_hash(PASSWORD)
        ids["owner"], world.emails["owner"] = bootstrap.id, bootstrap.email
        session.add(Organization(id=ORG_C, name="Charlie"))
    for name in ("D1", "D2"):
        made = await owner.post("/api/v1/admin/divisions", json={"name": f"Division {name}"})
        assert made.status_code == 201, made.text
        ids[name] = made.json()["id"]
    for who, (role, division) in USERS.items():
        email = f"{who.replace('_', '-')}@alpha.example"
        made = await owner.post("/api/v1/admin/users", json={
            "email": email, "name": who, "role": role, "password": PASSWORD,
            "division_id": ids[division] if division else None})
        assert made.status_code == 201, made.text
        ids[who], world.emails[who] = made.json()["id"], email
        world.clients[who] = client_for(app, await login(world.clients["anonymous"], email))
    ids["key"], raw = await _keyless_key(world.running, ids["org"])
    world.clients["key"] = client_for(app, raw)
    tenant = await create_tenant(world.db, "Bravo", org_id=ORG_B)
    async with world.db.system_session() as session:
        user = await session.get(User, tenant.user_id)
        assert user is not None
        user.password_hash = await password_hash(PASSWORD)
        world.emails["other"] = user.email
    world.clients["other"] = client_for(app, await login(world.clients["anonymous"], world.emails["other"]))

    member, div_member = world.clients["member"], world.clients["div_member"]
    made = await member.post("/api/v1/collections", json={"name": "m-private", "visibility": "private"})
    assert made.status_code == 201, made.text
    ids["job"], private_docs = await _ingested(member, {"private.md": PRIVATE_DOC}, "m-private")
    _, org_docs = await _ingested(member, {"org.md": ORG_DOC}, "org-docs")
    _, d1_docs = await _ingested(div_member, {"division.md": D1_DOC}, "d1-docs")
    ids["doc_m-private"], ids["doc_org-docs"], ids["doc_d1-docs"] = private_docs[0], org_docs[0], d1_docs[0]
    for client, collection in ((member, "org-docs"), (div_member, "d1-docs")):
        pool = {f"pool-{n}.md": f"Pool note {n} of {collection}: a disposable note.\n" for n in range(len(ORDER))}
        _, world.pools[collection] = await _ingested(client, pool, collection)
    world.docs.update({"m-private": set(private_docs), "org-docs": {*org_docs, *world.pools["org-docs"]},
                       "d1-docs": {*d1_docs, *world.pools["d1-docs"]}})
    for who, name in (("member", "conv_member"), ("div_member", "conv_d1")):
        asked = await world.clients[who].post("/api/v1/chat/ask", json={"message": QUESTION})
        assert asked.status_code == 200, asked.text
        ids[name] = asked.json()["conversation_id"]
        ids[name.replace("conv", "answer")] = asked.json()["message_id"]
    query = await member.post("/api/v1/query", json={"question": QUESTION})
    assert query.status_code == 201, query.text
    ids["query"] = query.json()["id"]
    for who, name, visibility in (("member", "art_private", "private"), ("member", "art_org", "org"),
                                  ("div_member", "art_d1", "division")):
        made = await world.clients[who].post("/api/v1/artifacts", json={
            "kind": "markdown", "title": ARTIFACT_TITLE.format(name), "visibility": visibility,
            "content": {"text": f"The {ARTIFACT_WORD} of {name}."}})
        assert made.status_code == 201, made.text
        ids[name] = made.json()["id"]
    ids["d1_key"] = await world.key_of(ids["div_member"])
    for scope, subject, period, limit, name in (("org", None, "total", "1000", "budget_org"),
                                                ("user", ids["div_member"], "month", "10", "budget_d1_user"),
                                                ("user", ids["member"], "month", "10", "budget_member")):
        made = await owner.put("/api/v1/admin/budgets", json={
            "scope": scope, "subject_id": subject, "period": period, "limit_usd": limit})
        assert made.status_code == 201, made.text
        ids[name] = made.json()["id"]
    ids["inv_org"] = await world.invitation(None)
    ids["inv_d1"] = await world.invitation(ids["D1"])
    ids["inv_for_member"] = await world.invitation_for_member()
    made = await world.clients["other"].put("/api/v1/admin/budgets", json={
        "scope": "org", "period": "total", "limit_usd": "1000"})
    assert made.status_code == 201, made.text
    assert (await owner.put("/api/v1/admin/policy", json=POLICY)).status_code == 200
    await _agent_threads(world)
    await _flows_and_projects(world)
    ids["device_member"] = await world.device("member")
    ids["webhook"] = await world.webhook()
    world.secrets = ({value for name, value in ids.items() if name != "org"} | set().union(*world.docs.values())
                     | {ORG_WORD, D1_WORD, PRIVATE_WORD, "Division D1", "Division D2"})


@pytest.fixture(scope="module", params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    backend: str = request.param
    settings = await backend_settings(request, tmp_path_factory.mktemp(f"authz-{backend}"), backend, gateway={
        "providers": {"vault": {"kind": "fake", "fake_answer": "An answer of the vault model."}},
        "models": {"vault-model": {"provider": "vault", "model": "fake"}},
    }, auth={"login_attempts_per_minute_per_ip": 100_000, "access_token_ttl_s": 3600},
        notifications=NOTIFICATIONS_FOR_TESTS,
        webhooks={"allow_http": True, "allow_private": True, "max_attempts": 1, "max_per_org": 100})
    model = FakeChatModel(answer=artifact_or_grounded)  # artifacts are generated as JSON, the rest as before
    app, lifespan = await start_app(settings, model)
    clients = {"owner": client_for(app, ADMIN_KEY), "anonymous": client_for(app, None)}
    world = World(backend=backend, running=RunningApp(app, clients["owner"], model), model=model,
                  live=LiveServer(app, free_port(), lifespan="off"), clients=clients, ids={}, emails={}, docs={},
                  pools={}, secrets=set())
    try:
        await _build(world)
        async with world.live:
            yield world
    finally:
        for client in [*world.clients.values(), *world.extra_clients]:
            await client.aclose()
        await lifespan.__aexit__(None, None, None)


# --- How each line asks, and what it checks ------------------------------------------------------------------

Call = Callable[[World, str, str], Awaitable[Answer]]  # (world, who, path template) -> the answer
Check = Callable[[World, str, Answer], Awaitable[None]]


@dataclass(frozen=True)
class Probe:
    call: Call
    check: Check | None = None  # after a 2xx answer (``always``: after any answer with the expected status)
    always: bool = False


PROBES: dict[str, Probe] = {}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def fill(path: str, **values: str) -> str:
    return _PARAM.sub(lambda match: values[match.group(1)], path)


def probe(*lines: str, check: Check | None = None, always: bool = False) -> Callable[[Call], Call]:
    def register(call: Call) -> Call:
        for line in lines:
            assert line in MATRIX and line not in PROBES, line
            PROBES[line] = Probe(call, check, always)
        return call

    return register


def simple(line: str, *, ids: Callable[[World], dict[str, str]] | None = None, json_body: Any = None,
           params: dict[str, Any] | None = None, check: Check | None = None) -> None:
    """A line whose request is the same for every principal."""
    async def call(world: World, who: str, path: str) -> Answer:
        body = json_body(world, who) if callable(json_body) else json_body
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        if params is not None:
            kwargs["params"] = params
        return await world.ask(who, parse_line(line)[0], fill(path, **(ids(world) if ids else {})), **kwargs)

    probe(line, check=check)(call)


def own_org(world: World, who: str) -> str:
    return ORG_B if who == "other" else world.ids["org"]


def _named(name: str) -> Callable[[World], dict[str, str]]:
    return lambda world: {"name": name}


# Public routes and the gateway.
for _line in ("GET /health", "GET /ready", "GET /metrics", "GET /openapi.json", "GET /docs",
              "GET /docs/oauth2-redirect", "GET /redoc", "GET /", "GET /v1/models"):
    simple(_line)
simple("GET /playground/{name}", ids=lambda world: {"name": "app.js"})
simple("GET /v1/models/{model_id:path}", ids=lambda world: {"model_id": "fake"})
simple("POST /v1/chat/completions", json_body={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
simple("POST /v1/messages", json_body={"model": "fake", "max_tokens": 20,
                                       "messages": [{"role": "user", "content": "hi"}]})
simple("POST /v1/embeddings", json_body={"model": "hash-bow", "input": "hello"})


# Conversations and chat.
async def _conversation_list(world: World, who: str, answer: Answer) -> None:
    listed = {c["id"] for c in answer.body["conversations"]}
    assert (world.ids["conv_member"] in listed) == (who == "member"), listed
    assert (world.ids["conv_d1"] in listed) == (who == "div_member"), listed


simple("GET /api/v1/conversations", params={"limit": 200}, check=_conversation_list)
for _line in ("GET /api/v1/conversations/{conversation_id}", "GET /api/v1/conversations/{conversation_id}/messages"):
    simple(_line, ids=lambda world: {"conversation_id": world.ids["conv_member"]})


async def _gone_if_deleted(world: World, who: str, answer: Answer) -> None:
    exists = await world.conversation_exists(answer.values["conversation"])
    assert exists == (answer.status != 204)
    if exists:
        assert await world.message_count(answer.values["conversation"]) == 2


def _erase(owner: str, method: str) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        conversation = await world.conversation(owner)
        answer = await world.ask(who, method, fill(path, conversation_id=conversation))
        answer.values["conversation"] = conversation
        return answer

    return call


probe("DELETE /api/v1/conversations/{conversation_id}", check=_gone_if_deleted, always=True)(
    _erase("member", "DELETE"))


@probe("PATCH /api/v1/conversations/{conversation_id}")
async def _rename(world: World, who: str, path: str) -> Answer:
    conversation = await world.conversation("member")
    answer = await world.ask(who, "PATCH", fill(path, conversation_id=conversation), json={"title": f"By {who}"})
    async with world.db.system_session() as session:
        title = (await session.get(Conversation, conversation)).title  # type: ignore[union-attr]
    assert title == (f"By {who}" if answer.status == 200 else "Throwaway"), title
    return answer


async def _replayed(world: World, who: str, answer: Answer) -> None:
    assert "event: done" in answer.text and world.ids["answer_member"] in answer.text, answer.text[:300]


async def _own_changes(world: World, who: str, answer: Answer) -> None:
    synced = {change["conversation_id"] for change in answer.body["changes"]}
    assert (world.ids["conv_member"] in synced) == (who == "member"), synced
    assert (world.ids["conv_d1"] in synced) == (who == "div_member"), synced


simple("GET /api/v1/sync", params={"limit": 1000}, check=_own_changes)
simple("GET /api/v1/conversations/{conversation_id}/messages/{message_id}/stream", check=_replayed,
       ids=lambda world: {"conversation_id": world.ids["conv_member"], "message_id": world.ids["answer_member"]})
probe("DELETE /api/v1/admin/conversations/{conversation_id}", check=_gone_if_deleted, always=True)(
    _erase("div_member", "DELETE"))
probe("DELETE /api/v1/admin/conversations/{conversation_id} #unscoped", check=_gone_if_deleted, always=True)(
    _erase("member", "DELETE"))


async def _admin_conversation_list(world: World, who: str, answer: Answer) -> None:
    listed = {c["id"] for c in answer.body["conversations"]}
    assert (world.ids["conv_d1"] in listed) == (who in ("owner", "admin", "div_admin")), listed
    assert (world.ids["conv_member"] in listed) == (who in ("owner", "admin")), listed
    assert all("title" not in c and "messages" not in c for c in answer.body["conversations"])


simple("GET /api/v1/admin/conversations", params={"limit": 200}, check=_admin_conversation_list)


async def _victim_untouched(world: World, who: str, answer: Answer) -> None:
    """Refused: the member's conversation has the same messages, and no model was called."""
    if answer.status != 200:
        count, calls = answer.values["before"]
        assert await world.message_count(world.ids["conv_member"]) == count
        assert len(world.model.requests) == calls


async def _before(world: World) -> tuple[int, int]:
    return await world.message_count(world.ids["conv_member"]), len(world.model.requests)


def _ask_into(stream: bool) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        before = await _before(world)
        answer = await world.ask(who, "POST", path, json={"message": "Add this to your history", "stream": stream,
                                                          "conversation_id": world.ids["conv_member"]})
        answer.values["before"] = before
        if stream and answer.status == 200:
            assert "event: done" in answer.text, answer.text
        return answer

    return call


probe("POST /api/v1/chat/ask", check=_victim_untouched, always=True)(_ask_into(stream=False))
probe("POST /api/v1/chat/ask #stream", check=_victim_untouched, always=True)(_ask_into(stream=True))


def _sources_of(answer: Answer) -> set[str]:
    if isinstance(answer.body, list):  # WebSocket events
        return {s["document_id"] for event in answer.body if event["type"] == "sources" for s in event["sources"]}
    return {s["document_id"] for s in answer.body["sources"]}


async def _sources_readable(world: World, who: str, answer: Answer) -> None:
    leaked = _sources_of(answer) & world.unreadable(who)
    assert not leaked, f"{who} was answered from documents it may not read: {leaked}"


simple("POST /api/v1/chat/ask #plain", json_body={"message": QUESTION}, check=_sources_readable)


async def ws_chat(world: World, who: str, request: dict[str, Any]) -> Answer:
    """One chat over a real socket as ``who``."""
    client = world.clients[who]
    headers = {"Authorization": client.headers["authorization"]} if "authorization" in client.headers else {}
    async with connect(f"{world.live.ws_url}/ws", additional_headers=headers, open_timeout=10) as ws:
        try:
            ready = json.loads(str(await ws.recv()))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            return Answer(code - 4000 if code >= 4000 else code, {"closed": code}, str(closed), json.dumps(request))
        assert ready["type"] == "ready", ready
        events = await ws_exchange(ws, request)
    last = events[-1]
    status = 200 if last["type"] == "done" else WS_STATUS.get(last["error"]["code"], 500)
    return Answer(status, events, json.dumps(events), json.dumps(request))


@probe("WS /ws", check=_victim_untouched, always=True)
async def _ws_into(world: World, who: str, path: str) -> Answer:
    before = await _before(world)
    answer = await ws_chat(world, who, {"type": "chat", "id": "into", "message": "Add this to your history",
                                        "conversation_id": world.ids["conv_member"]})
    answer.values["before"] = before
    return answer


@probe("WS /ws #plain", check=_sources_readable)
async def _ws_plain(world: World, who: str, path: str) -> Answer:
    return await ws_chat(world, who, {"type": "chat", "id": "plain", "message": QUESTION})


# Queries.
simple("POST /api/v1/query", json_body={"question": QUESTION}, check=_sources_readable)
simple("GET /api/v1/query/{record_id}", ids=lambda world: {"record_id": world.ids["query"]})


async def _asked_as_member(world: World, who: str, answer: Answer) -> None:
    if answer.status == 403:
        assert answer.body["error"]["code"] == "user_mismatch", answer.body
    elif answer.status == 201:
        assert answer.body["query_id"] == answer.body["id"] and answer.body["response"] == answer.body["answer"]


@probe("POST /api/v1/query #user_id", check=_asked_as_member, always=True)
async def _query_as_member(world: World, who: str, path: str) -> Answer:
    return await world.ask(who, "POST", path, json={"query": QUESTION, "model": "fake",
                                                    "user_id": world.ids["member"]})


# Documents, jobs, search.
def _in_scope(world: World, who: str, answer: Answer) -> set[str]:
    """The first documents ``who`` may read, within the collection the request named (if it named one)."""
    scope = world.docs["d1-docs"] if "d1-docs" in answer.sent else set().union(*world.docs.values())
    return world.base_readable(who) & scope


async def _documents_listed(world: World, who: str, answer: Answer) -> None:
    listed = {d["id"] for d in answer.body["documents"]}
    assert not listed & world.unreadable(who), f"{who} lists documents it may not read"
    assert _in_scope(world, who, answer) <= listed


simple("GET /api/v1/documents", params={"limit": 200}, check=_documents_listed)
simple("GET /api/v1/documents #d1", params={"limit": 200, "collection": "d1-docs"}, check=_documents_listed)
simple("GET /api/v1/documents/{document_id}", ids=lambda world: {"document_id": world.ids["doc_d1-docs"]})
simple("GET /api/v1/documents/{document_id} #private",
       ids=lambda world: {"document_id": world.ids["doc_m-private"]})
simple("GET /api/v1/documents/{document_id} #org", ids=lambda world: {"document_id": world.ids["doc_org-docs"]})


def _delete_pooled(collection: str) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        document = world.pools[collection].pop()
        answer = await world.ask(who, "DELETE", fill(path, document_id=document))
        answer.values["document"] = document
        return answer

    return call


async def _document_gone_if_deleted(world: World, who: str, answer: Answer) -> None:
    found = await world.owner.get(f"/api/v1/documents/{answer.values['document']}")
    assert found.status_code == (404 if answer.status == 204 else 200), found.text


probe("DELETE /api/v1/documents/{document_id}", check=_document_gone_if_deleted, always=True)(
    _delete_pooled("d1-docs"))
probe("DELETE /api/v1/documents/{document_id} #org", check=_document_gone_if_deleted, always=True)(
    _delete_pooled("org-docs"))


def _upload_into(collection: str) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        note = (f"note-{who}.md", f"A note of {who}, uploaded for the matrix.\n".encode(), "text/plain")
        return await world.ask(who, "POST", path, data={"collection": collection}, files=[("files", note)])

    return call


async def _uploaded(world: World, who: str, answer: Answer) -> None:
    """The upload landed in the caller's own organisation: A's copy of the collection gets it only when
    the caller is of A."""
    if answer.status != 202:
        return
    job = await wait_job(world.clients[who], answer.body["job_id"])
    assert job["status"] == "succeeded", job
    document = job["result"]["documents"][0]["document_id"]
    collection = answer.body["collection"]
    if who == "other":
        assert (await world.owner.get(f"/api/v1/documents/{document}")).status_code == 404
        # B's collection of that name goes again: B's later answers for the name must be about A's.
        dropped = await world.clients["other"].delete(f"/api/v1/collections/{collection}")
        assert dropped.status_code == 204, dropped.text
    else:
        world.docs[collection].add(document)


probe("POST /api/v1/documents", check=_uploaded)(_upload_into("d1-docs"))
probe("POST /api/v1/documents #private", check=_uploaded)(_upload_into("m-private"))


async def _url_refused(world: World, who: str, answer: Answer) -> None:
    if answer.status == 422:
        assert answer.body["error"]["code"] == "url_not_allowed", answer.body


simple("POST /api/v1/documents #url", json_body={"url": "http://127.0.0.1:9/", "collection": "d1-docs"},
       check=_url_refused)
simple("POST /api/v1/documents #url-private", json_body={"url": "http://127.0.0.1:9/", "collection": "m-private"},
       check=_url_refused)
simple("GET /api/v1/jobs/{job_id}", ids=lambda world: {"job_id": world.ids["job"]})


async def _job_left_as_it_was(world: World, who: str, answer: Answer) -> None:
    assert (answer.body["id"], answer.body["status"]) == (world.ids["job"], "succeeded")


simple("POST /api/v1/jobs/{job_id}/cancel", ids=lambda world: {"job_id": world.ids["job"]},
       check=_job_left_as_it_was)


async def _search_readable(world: World, who: str, answer: Answer) -> None:
    found = {r["document_id"] for r in answer.body["results"]}
    assert not found & world.unreadable(who), f"{who} found documents it may not read"
    if answer.body["mode"] == "keyword":
        assert _in_scope(world, who, answer) <= found, found


simple("POST /api/v1/search/semantic", json_body={"query": "handbook", "mode": "keyword", "limit": 50},
       check=_search_readable)
simple("POST /api/v1/search/semantic #vector", json_body={"query": QUESTION, "mode": "vector", "limit": 50},
       check=_search_readable)
simple("POST /api/v1/search/semantic #d1",
       json_body={"query": "handbook", "mode": "keyword", "limit": 50, "collection": "d1-docs"},
       check=_search_readable)


# Collections.
async def _collections_listed(world: World, who: str, answer: Answer) -> None:
    listed = {c["name"]: c for c in answer.body["collections"]}
    if who == "other":  # B may have collections of the same names (its uploads), never A's
        assert not {c["owner_user_id"] for c in listed.values()} & {world.ids[user] for user in USERS}
        return
    readers = {"org-docs": set(IN_A), "d1-docs": D1_READERS, "m-private": {"member"}}
    for name, allowed in readers.items():
        assert (name in listed) == (who in allowed), (name, sorted(listed))


simple("GET /api/v1/collections", params={"limit": 200}, check=_collections_listed)


async def _created_collection(world: World, who: str, answer: Answer) -> None:
    body = answer.body
    assert body["can_manage"] and body["can_write"], body
    if "visibility" not in answer.sent:
        assert body["visibility"] == ("division" if world.division(who) else "org"), body


simple("POST /api/v1/collections", json_body=lambda world, who: {"name": world.unique(f"new-{who}")},
       check=_created_collection)
simple("POST /api/v1/collections #org",
       json_body=lambda world, who: {"name": world.unique(f"pub-{who}"), "visibility": "org"},
       check=_created_collection)
async def _b_takes_the_name(world: World, who: str, answer: Answer) -> None:
    """A name taken in A is free in B (names are per organisation); B's copy goes again at once."""
    if who == "other":
        dropped = await world.clients["other"].delete(f"/api/v1/collections/{answer.body['name']}")
        assert dropped.status_code == 204, dropped.text


simple("POST /api/v1/collections #taken", json_body={"name": "d1-docs", "visibility": "private"},
       check=_b_takes_the_name)
simple("GET /api/v1/collections/{name}", ids=_named("d1-docs"))
simple("GET /api/v1/collections/{name} #private", ids=_named("m-private"))
simple("GET /api/v1/collections/{name} #org", ids=_named("org-docs"))
for _line, _name in (("PATCH /api/v1/collections/{name}", "d1-docs"),
                     ("PATCH /api/v1/collections/{name} #private", "m-private"),
                     ("PATCH /api/v1/collections/{name} #org", "org-docs")):
    simple(_line, ids=_named(_name), json_body={"writers": "readers"})  # a no-op: writers stay "readers"


@probe("DELETE /api/v1/collections/{name}")
async def _delete_collection(world: World, who: str, path: str) -> Answer:
    name = await world.d1_collection()
    answer = await world.ask(who, "DELETE", fill(path, name=name))
    assert await world.collection_exists(name) == (answer.status != 204)
    return answer


# Artifacts.
async def _artifacts_readable(world: World, who: str, answer: Answer) -> None:
    """Lists and searches hold the artifacts ``who`` may read, and no other."""
    body = answer.body
    found = ({hit["artifact"]["id"] for hit in body["results"]} if "results" in body
             else {row["id"] for row in body["artifacts"]})
    for name, readers in ARTIFACT_READERS.items():
        assert (world.ids[name] in found) == (who in readers), (name, sorted(found))


async def _artifact_is_callers(world: World, who: str, answer: Answer) -> None:
    """A new artifact belongs to the caller, in the caller's organisation."""
    body = answer.body
    assert body["can_edit"] and body["version"] == 1, body
    if who in USERS:
        assert body["owner_user_id"] == world.ids[who], body
    seen_by_a = await world.owner.get(f"/api/v1/artifacts/{body['id']}")
    readable = who == "owner" or (who != "other" and body["visibility"] != "private")
    assert seen_by_a.status_code == (200 if readable else 404), seen_by_a.text


simple("POST /api/v1/artifacts/generate", json_body={"prompt": "A checklist for the matrix", "kind": "checklist"},
       check=_artifact_is_callers)
simple("POST /api/v1/artifacts", json_body=lambda world, who: {
    "kind": "markdown", "title": world.unique(f"note-{who}"), "content": {"text": "A note."}},
       check=_artifact_is_callers)
simple("POST /api/v1/artifacts #org", json_body=lambda world, who: {
    "kind": "table", "title": world.unique(f"table-{who}"), "visibility": "org",
    "content": {"columns": ["a"], "rows": [[1]]}}, check=_artifact_is_callers)
simple("GET /api/v1/artifacts", params={"limit": 200}, check=_artifacts_readable)
simple("POST /api/v1/artifacts/search", json_body={"query": ARTIFACT_WORD, "mode": "keyword", "limit": 50},
       check=_artifacts_readable)


def _artifact(name: str) -> Callable[[World], dict[str, str]]:
    return lambda world: {"artifact_id": world.ids[name], "number": "1"}


for _line, _name in (("GET /api/v1/artifacts/{artifact_id}", "art_d1"),
                     ("GET /api/v1/artifacts/{artifact_id} #private", "art_private"),
                     ("GET /api/v1/artifacts/{artifact_id} #org", "art_org"),
                     ("GET /api/v1/artifacts/{artifact_id}/versions", "art_d1"),
                     ("GET /api/v1/artifacts/{artifact_id}/versions/{number}", "art_d1"),
                     ("GET /api/v1/artifacts/{artifact_id}/versions/{number} #private", "art_private"),
                     ("GET /api/v1/artifacts/{artifact_id}/export", "art_d1")):
    simple(_line, ids=_artifact(_name))
for _line, _name in (("PATCH /api/v1/artifacts/{artifact_id}", "art_d1"),
                     ("PATCH /api/v1/artifacts/{artifact_id} #private", "art_private"),
                     ("PATCH /api/v1/artifacts/{artifact_id} #org", "art_org")):
    # A no-op: the title it has (no new version), so each principal finds the artifact as the last left it.
    simple(_line, ids=_artifact(_name), json_body={"title": ARTIFACT_TITLE.format(_name)})


@probe("DELETE /api/v1/artifacts/{artifact_id}")
async def _delete_artifact(world: World, who: str, path: str) -> Answer:
    made = await world.clients["div_member"].post("/api/v1/artifacts", json={
        "kind": "markdown", "title": world.unique("doomed"), "content": {"text": "Soon gone."},
        "visibility": "division"})
    assert made.status_code == 201, made.text
    artifact = made.json()["id"]
    answer = await world.ask(who, "DELETE", fill(path, artifact_id=artifact))
    still = await world.owner.get(f"/api/v1/artifacts/{artifact}")
    assert still.status_code == (404 if answer.status == 204 else 200), still.text
    return answer


# Account administration.
async def _own_org_answered(world: World, who: str, answer: Answer) -> None:
    assert answer.body["id"] == own_org(world, who), answer.body


simple("GET /api/v1/admin/org", check=_own_org_answered)
simple("GET /api/v1/admin/orgs")
simple("POST /api/v1/admin/orgs", json_body=lambda world, who: {"name": world.unique(f"org-{who}")})


async def _divisions_listed(world: World, who: str, answer: Answer) -> None:
    listed = {d["id"] for d in answer.body["divisions"]}
    assert (world.ids["D1"] in listed) == (who in ("owner", "admin", "div_admin")), listed
    assert (world.ids["D2"] in listed) == (who in ("owner", "admin")), listed


simple("GET /api/v1/admin/divisions", check=_divisions_listed)
simple("POST /api/v1/admin/divisions", json_body=lambda world, who: {"name": world.unique(f"division-{who}")})


@probe("DELETE /api/v1/admin/divisions/{division_id}")
async def _delete_division(world: World, who: str, path: str) -> Answer:
    made = await world.owner.post("/api/v1/admin/divisions", json={"name": world.unique("empty division")})
    assert made.status_code == 201, made.text
    return await world.ask(who, "DELETE", fill(path, division_id=made.json()["id"]))


async def _users_listed(world: World, who: str, answer: Answer) -> None:
    listed = {u["id"] for u in answer.body["users"]}
    assert (world.ids["div_member"] in listed) == (who in ("owner", "admin", "div_admin")), listed
    assert (world.ids["member"] in listed) == (who in ("owner", "admin")), listed


simple("GET /api/v1/admin/users", params={"limit": 200}, check=_users_listed)
simple("POST /api/v1/admin/users", json_body=lambda world, who: {
    "email": f"{world.unique(who)}@new.example", "name": "New", "division_id": world.ids["D1"]})
simple("POST /api/v1/admin/users #owner", json_body=lambda world, who: {
    "email": f"{world.unique(who)}@owner.example", "name": "New owner", "role": "owner"})
simple("GET /api/v1/admin/users/{user_id}", ids=lambda world: {"user_id": world.ids["div_member"]})
simple("GET /api/v1/admin/users/{user_id} #unscoped", ids=lambda world: {"user_id": world.ids["member"]})
simple("PATCH /api/v1/admin/users/{user_id}", ids=lambda world: {"user_id": world.ids["div_member"]},
       json_body={"name": "div_member"})
simple("PATCH /api/v1/admin/users/{user_id} #unscoped", ids=lambda world: {"user_id": world.ids["member"]},
       json_body={"name": "member"})


@probe("DELETE /api/v1/admin/users/{user_id}")
async def _delete_user(world: World, who: str, path: str) -> Answer:
    user = await world.user(division=world.ids["D1"])
    answer = await world.ask(who, "DELETE", fill(path, user_id=user))
    async with world.db.system_session() as session:
        assert (await session.get(User, user) is None) == (answer.status == 204)
    return answer


simple("POST /api/v1/admin/memberships",
       json_body=lambda world, who: {"email": f"{world.unique(who)}@nobody.example"})


@probe("POST /api/v1/admin/memberships #existing")
async def _invite_existing(world: World, who: str, path: str) -> Answer:
    _, email = await world.user_elsewhere(seat_in_a=False)
    return await world.ask(who, "POST", path, json={"email": email})


@probe("DELETE /api/v1/admin/memberships/{user_id}")
async def _remove_membership(world: World, who: str, path: str) -> Answer:
    user, _ = await world.user_elsewhere(seat_in_a=True)
    answer = await world.ask(who, "DELETE", fill(path, user_id=user))
    async with world.db.system_session() as session:
        seat = await session.scalar(select(Membership.id).where(Membership.user_id == user,
                                                                Membership.org_id == world.ids["org"]))
    assert (seat is None) == (answer.status == 204)
    return answer


simple("POST /api/v1/admin/invitations",
       json_body=lambda world, who: {"email": f"{world.unique(who)}@nobody.example"})


@probe("POST /api/v1/admin/invitations #existing")
async def _invite_existing_user(world: World, who: str, path: str) -> Answer:
    _, email = await world.user_elsewhere(seat_in_a=False)
    return await world.ask(who, "POST", path, json={"email": email})


simple("POST /api/v1/admin/invitations #owner",
       json_body=lambda world, who: {"email": f"{world.unique(who)}@owner.example", "role": "owner"})
simple("POST /api/v1/admin/invitations #member", json_body=lambda world, who: {"email": world.emails["member"]})


async def _invitations_listed(world: World, who: str, answer: Answer) -> None:
    listed = {i["id"] for i in answer.body["invitations"]}
    assert (world.ids["inv_d1"] in listed) == (who in ("owner", "admin", "div_admin")), listed
    assert (world.ids["inv_org"] in listed) == (who in ("owner", "admin")), listed
    assert world.ids["inv_for_member"] not in listed


simple("GET /api/v1/admin/invitations", params={"limit": 200}, check=_invitations_listed)


def _revoke_invitation(division: str | None) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        invitation = await world.invitation(world.ids[division] if division else None)
        answer = await world.ask(who, "DELETE", fill(path, invitation_id=invitation))
        assert (await world.invitation_status(invitation) == "revoked") == (answer.status == 204)
        return answer

    return call


probe("DELETE /api/v1/admin/invitations/{invitation_id}")(_revoke_invitation("D1"))
probe("DELETE /api/v1/admin/invitations/{invitation_id} #unscoped")(_revoke_invitation(None))


async def _my_invitations(world: World, who: str, answer: Answer) -> None:
    listed = {i["id"] for i in answer.body["invitations"]}
    assert (world.ids["inv_for_member"] in listed) == (who == "member"), listed
    assert not listed & {world.ids["inv_org"], world.ids["inv_d1"]}, listed


simple("GET /api/v1/invitations", check=_my_invitations)


def _answer_invitation(method: str, outcome: str) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        invitation = await world.invitation_for_member()
        answer = await world.ask(who, method, fill(path, invitation_id=invitation))
        status = await world.invitation_status(invitation)
        assert status == (outcome if answer.status == 200 else "pending"), status
        if answer.status == 200 and outcome == "accepted":  # the member leaves C again, for the next one
            async with world.db.system_session() as session:
                seat = await session.scalar(select(Membership).where(
                    Membership.org_id == ORG_C, Membership.user_id == world.ids["member"]))
                assert seat is not None and seat.role == "viewer"
                await session.delete(seat)
        return answer

    return call


probe("POST /api/v1/invitations/{invitation_id}/accept")(_answer_invitation("POST", "accepted"))
probe("POST /api/v1/invitations/{invitation_id}/decline")(_answer_invitation("POST", "declined"))


simple("GET /api/v1/admin/service-accounts")
simple("POST /api/v1/admin/service-accounts", json_body=lambda world, who: {"name": world.unique(f"bot-{who}")})


async def _keys_listed(world: World, who: str, answer: Answer) -> None:
    listed = {k["id"] for k in answer.body["keys"]}
    assert (world.ids["d1_key"] in listed) == (who in ("owner", "admin", "div_admin")), listed
    assert (world.ids["key"] in listed) == (who in ("owner", "admin")), listed


simple("GET /api/v1/admin/keys", params={"limit": 200}, check=_keys_listed)
simple("POST /api/v1/admin/keys", json_body=lambda world, who: {"name": world.unique(f"key-{who}")})
simple("POST /api/v1/admin/keys #unscoped",
       json_body=lambda world, who: {"name": world.unique(f"key-{who}"), "user_id": world.ids["member"]})


def _on_d1_key(method: str) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        return await world.ask(who, method, fill(path, key_id=await world.key_of(world.ids["div_member"])))

    return call


probe("DELETE /api/v1/admin/keys/{key_id}")(_on_d1_key("DELETE"))
probe("POST /api/v1/admin/keys/{key_id}/rotate")(_on_d1_key("POST"))
simple("GET /api/v1/admin/audit", params={"limit": 200})


# Budgets, policy, breakers.
simple("PUT /api/v1/admin/budgets", json_body={"scope": "org", "period": "total", "limit_usd": "1000"})
simple("PUT /api/v1/admin/budgets #division", json_body=lambda world, who: {
    "scope": "user", "subject_id": world.ids["div_member"], "period": "month", "limit_usd": "10"})
simple("PUT /api/v1/admin/budgets #unscoped", json_body=lambda world, who: {
    "scope": "user", "subject_id": world.ids["member"], "period": "month", "limit_usd": "10"})
async def _budgets_listed(world: World, who: str, answer: Answer) -> None:
    """A division admin lists the organisation's budget and its division's, not those outside it."""
    listed = {b["id"] for b in answer.body["budgets"]}
    if who == "other":
        return
    assert {world.ids["budget_org"], world.ids["budget_d1_user"]} <= listed, listed
    assert (world.ids["budget_member"] in listed) == (who in ("owner", "admin")), listed


simple("GET /api/v1/admin/budgets", check=_budgets_listed)


def _delete_key_budget(user: str | None) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        budget = await world.key_budget(world.ids[user] if user else None)
        return await world.ask(who, "DELETE", fill(path, budget_id=budget))

    return call


probe("DELETE /api/v1/admin/budgets/{budget_id}")(_delete_key_budget("div_member"))
probe("DELETE /api/v1/admin/budgets/{budget_id} #unscoped")(_delete_key_budget(None))
simple("POST /api/v1/admin/budgets/{budget_id}/reset", ids=lambda world: {"budget_id": world.ids["budget_d1_user"]})
simple("POST /api/v1/admin/budgets/{budget_id}/reset #org", ids=lambda world: {"budget_id": world.ids["budget_org"]})
simple("GET /api/v1/budget")


async def _own_policy(world: World, who: str, answer: Answer) -> None:
    assert answer.body["org_id"] == own_org(world, who), answer.body


simple("GET /api/v1/admin/policy", check=_own_policy)
simple("PUT /api/v1/admin/policy", json_body=POLICY, check=_own_policy)
simple("GET /api/v1/admin/gateway/breakers")
simple("POST /api/v1/admin/gateway/breakers/{provider}/reset", ids=lambda world: {"provider": "vault"})


# Sessions.
def _credentials(world: World, who: str) -> dict[str, Any]:
    """``who``'s own email and password, into organisation A (a key and the anonymous caller have none: the
    member's email with a wrong password)."""
    if who in ("key", "anonymous"):
        return {"email": world.emails["member"], "password": "not-the-password"}
    return {"email": world.emails[who], "password": PASSWORD, "org_id": world.ids["org"]}


async def _logged_in_to_a(world: World, who: str, answer: Answer) -> None:
    role = USERS[who][0] if who in USERS else "owner"
    assert answer.body["org_id"] == world.ids["org"] and answer.body["role"] == role, answer.body


simple("POST /api/v1/auth/token", json_body=_credentials, check=_logged_in_to_a)


async def _refresh_token(world: World, who: str) -> str:
    if who in ("key", "anonymous"):
        return "atrr_made-up-token-of-no-session"
    credentials = _credentials(world, who)
    credentials.pop("org_id")
    response = await world.clients["anonymous"].post("/api/v1/auth/token", json=credentials)
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


@probe("POST /api/v1/auth/refresh")
async def _refresh(world: World, who: str, path: str) -> Answer:
    answer = await world.ask(who, "POST", path, json={"refresh_token": await _refresh_token(world, who)})
    if answer.status == 200:
        assert answer.body["org_id"] == own_org(world, who), answer.body
    return answer


@probe("POST /api/v1/auth/logout")
async def _logout(world: World, who: str, path: str) -> Answer:
    token = await _refresh_token(world, who)
    answer = await world.ask(who, "POST", path, json={"refresh_token": token})
    ended = await world.clients["anonymous"].post("/api/v1/auth/refresh", json={"refresh_token": token})
    assert ended.status_code == 401, ended.text
    return answer


@probe("POST /api/v1/auth/revoke")
async def _revoke(world: World, who: str, path: str) -> Answer:
    return await world.ask(who, "POST", path, client=await world.session_of(who))


# A user's own data.
async def _export_is_own(world: World, who: str, answer: Answer) -> None:
    """The export holds the caller's own conversations, queries and uploads (documents it could read may be
    cited in its own answers' sources), and nobody else's."""
    body = answer.body
    conversations = {c["id"] for c in body["conversations"]}
    queries, documents = {q["id"] for q in body["queries"]}, {d["id"] for d in body["documents"]}
    assert (world.ids["conv_member"] in conversations) == (who == "member"), conversations
    assert (world.ids["query"] in queries) == (who == "member"), queries
    assert (world.ids["doc_m-private"] in documents) == (who == "member"), documents
    assert (world.ids["conv_d1"] in conversations) == (who == "div_member"), conversations
    assert (world.ids["doc_d1-docs"] in documents) == (who == "div_member"), documents
    assert world.ids["conv_member"] not in answer.text or who == "member"


simple("GET /api/v1/me/export", check=_export_is_own)


@probe("DELETE /api/v1/me")
async def _erase_me(world: World, who: str, path: str) -> Answer:
    client = await world.session_of(who)
    answer = await world.ask(who, "DELETE", path, client=client)
    if answer.status == 200:
        assert (await client.get("/api/v1/conversations")).status_code == 401  # the account is gone
        assert await world.message_count(world.ids["conv_member"]) >= 2  # and nobody else's data
    return answer


# The agents API.
ECHO = {"assistant_id": "echo", "input": {"messages": [{"role": "user", "content": "Hello"}]}}


async def _agent_threads(world: World) -> None:
    """The member's private thread (one finished run) and its organisation-visible one (one finished run)."""
    member = world.clients["member"]
    for name, visibility in (("thread_member", "private"), ("thread_org", "org")):
        made = await member.post("/threads", json={"visibility": visibility, "metadata": {"owner": "member"}})
        assert made.status_code == 200, made.text
        world.ids[name] = made.json()["thread_id"]
        waited = await member.post(f"/threads/{world.ids[name]}/runs/wait", json=ECHO)
        assert waited.status_code == 200, waited.text
        runs = await member.get(f"/threads/{world.ids[name]}/runs")
        world.ids[name.replace("thread", "run")] = runs.json()[0]["run_id"]
    state = await member.get(f"/threads/{world.ids['thread_member']}/state")
    world.ids["checkpoint_member"] = state.json()["checkpoint"]["checkpoint_id"]


def _thread(name: str) -> Callable[[World], dict[str, str]]:
    return lambda world: {"thread_id": world.ids[name], "run_id": world.ids[name.replace("thread", "run")],
                          "checkpoint_id": world.ids["checkpoint_member"], "assistant_id": "echo"}


simple("GET /assistants/{assistant_id}", ids=lambda world: {"assistant_id": "echo"})
simple("POST /assistants/search", json_body={"limit": 10})
simple("GET /assistants/{assistant_id}/graph", ids=lambda world: {"assistant_id": "interviewer"})
simple("POST /threads", json_body={"metadata": {"made_by": "matrix"}})


async def _threads_searched(world: World, who: str, answer: Answer) -> None:
    found = {thread["thread_id"] for thread in answer.body}
    assert (world.ids["thread_member"] in found) == (who == "member"), found
    assert (world.ids["thread_org"] in found) == (who in IN_A), found


simple("POST /threads/search", json_body={"limit": 1000}, check=_threads_searched)
simple("GET /threads/{thread_id}", ids=_thread("thread_member"))
simple("GET /threads/{thread_id} #org", ids=_thread("thread_org"))
simple("PATCH /threads/{thread_id}", ids=_thread("thread_member"), json_body={"metadata": {"owner": "member"}})
simple("PATCH /threads/{thread_id} #org", ids=_thread("thread_org"), json_body={"metadata": {"owner": "member"}})
simple("GET /threads/{thread_id}/state", ids=_thread("thread_member"))
simple("GET /threads/{thread_id}/state #org", ids=_thread("thread_org"))
simple("POST /threads/{thread_id}/state", ids=_thread("thread_member"), json_body={"values": {"name": "Mia"}})
simple("GET /threads/{thread_id}/state/{checkpoint_id}", ids=_thread("thread_member"))
simple("GET /threads/{thread_id}/history", ids=_thread("thread_member"))
simple("POST /threads/{thread_id}/history", ids=_thread("thread_member"), json_body={"limit": 5})
simple("GET /threads/{thread_id}/runs", ids=_thread("thread_member"))
simple("GET /threads/{thread_id}/runs/{run_id}", ids=_thread("thread_member"))
simple("GET /threads/{thread_id}/runs/{run_id} #org", ids=_thread("thread_org"))
simple("POST /threads/{thread_id}/runs/{run_id}/cancel", ids=_thread("thread_member"))
simple("GET /threads/{thread_id}/runs/{run_id}/join", ids=_thread("thread_member"))
simple("GET /threads/{thread_id}/runs/{run_id}/stream", ids=_thread("thread_member"))


async def _members_thread(world: World, visibility: str = "private") -> str:
    made = await world.clients["member"].post("/threads", json={"visibility": visibility})
    assert made.status_code == 200, made.text
    return str(made.json()["thread_id"])


async def _thread_count(world: World, thread_id: str) -> int:
    answer = await world.clients["member"].get(f"/threads/{thread_id}/runs")
    return len(answer.json())


def _run_on_fresh_thread(visibility: str = "private") -> Call:
    """A new thread of the member's per request (a run in progress would make the next one a 409)."""
    async def call(world: World, who: str, path: str) -> Answer:
        thread_id = await _members_thread(world, visibility)
        answer = await world.ask(who, "POST", fill(path, thread_id=thread_id), json=ECHO)
        if answer.status == 200 and "stream" in path:
            assert "event: end" in answer.text, answer.text
        answer.values["runs"] = await _thread_count(world, thread_id)
        return answer

    return call


async def _ran_only_if_allowed(world: World, who: str, answer: Answer) -> None:
    assert answer.values["runs"] == (1 if answer.status == 200 else 0)


for _line in ("POST /threads/{thread_id}/runs", "POST /threads/{thread_id}/runs/stream",
              "POST /threads/{thread_id}/runs/wait"):
    probe(_line, check=_ran_only_if_allowed, always=True)(_run_on_fresh_thread())
probe("POST /threads/{thread_id}/runs #org", check=_ran_only_if_allowed, always=True)(_run_on_fresh_thread("org"))


@probe("DELETE /threads/{thread_id}")
async def _delete_thread(world: World, who: str, path: str) -> Answer:
    thread_id = await _members_thread(world)
    answer = await world.ask(who, "DELETE", fill(path, thread_id=thread_id))
    still = await world.clients["member"].get(f"/threads/{thread_id}")
    assert still.status_code == (404 if answer.status == 204 else 200), still.text
    return answer


# Guided flows and project records.
async def _member_flow(world: World, *, finish: str | None = None) -> str:
    """A new project flow of the member's, waiting for its title (``finish``: run to the end with this
    visibility, and return the project's id)."""
    member = world.clients["member"]
    made = await member.post("/api/v1/flows/project")
    assert made.status_code == 201, made.text
    flow_id = str(made.json()["id"])
    if finish is None:
        return flow_id
    for answer in (f"Project {finish}", f"The {finish} plan of the member.", "other", finish, "yes"):
        answered = await member.post(f"/api/v1/flows/{flow_id}/answer", json={"answer": answer})
        assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "done", answered.text
    return str(answered.json()["result"]["project_id"])


async def _flows_and_projects(world: World) -> None:
    world.ids["flow_member"] = await _member_flow(world)
    world.ids["project_private"] = await _member_flow(world, finish="private")
    world.ids["project_org"] = await _member_flow(world, finish="public")


async def _projects_listed(world: World, who: str, answer: Answer) -> None:
    listed = {project["id"] for project in answer.body["projects"]}
    assert (world.ids["project_private"] in listed) == (who == "member"), listed
    assert (world.ids["project_org"] in listed) == (who in IN_A), listed


simple("GET /api/v1/flows")
simple("POST /api/v1/flows/{flow_name}", ids=lambda world: {"flow_name": "project"})
simple("POST /api/v1/flows/{flow_name} #onboarding", ids=lambda world: {"flow_name": "onboarding"})
simple("GET /api/v1/flows/{flow_id}", ids=lambda world: {"flow_id": world.ids["flow_member"]})
simple("GET /api/v1/projects", params={"limit": 200}, check=_projects_listed)
simple("GET /api/v1/projects/{project_id}", ids=lambda world: {"project_id": world.ids["project_private"]})
simple("GET /api/v1/projects/{project_id} #org", ids=lambda world: {"project_id": world.ids["project_org"]})


def _on_fresh_flow(body: dict[str, Any] | None) -> Call:
    """A new flow of the member's per request; after a refusal it still waits for its title, untouched."""
    async def call(world: World, who: str, path: str) -> Answer:
        flow_id = await _member_flow(world)
        answer = await world.ask(who, "POST", fill(path, flow_id=flow_id), **({"json": body} if body else {}))
        state = (await world.clients["member"].get(f"/api/v1/flows/{flow_id}")).json()
        if answer.status >= 400:
            assert state["status"] == "waiting" and state["prompt"]["step"] == "title", state
        else:
            assert state["status"] == "cancelled" or state["prompt"]["step"] == "description", state
        return answer

    return call


probe("POST /api/v1/flows/{flow_id}/answer")(_on_fresh_flow({"answer": "Mine now"}))
probe("POST /api/v1/flows/{flow_id}/cancel")(_on_fresh_flow(None))


# Webhooks.
@probe("POST /api/v1/webhooks")
async def _register_webhook(world: World, who: str, path: str) -> Answer:
    answer = await world.ask(who, "POST", path, json={"url": f"http://127.0.0.1:9/hook/{world.unique(who)}"})
    if answer.status == 201:  # a webhook of the caller's own organisation
        assert (await world.webhook_orgs())[answer.body["id"]] == own_org(world, who)
        assert answer.body["secret"].startswith("whsec_")
    return answer


async def _org_webhooks(world: World, who: str, answer: Answer) -> None:
    listed = {hook["id"] for hook in answer.body["webhooks"]}
    orgs = await world.webhook_orgs()
    assert {orgs[hook_id] for hook_id in listed} == {own_org(world, who)}, listed
    assert (world.ids["webhook"] in listed) == (who != "other")
    assert all("secret" not in hook for hook in answer.body["webhooks"])


simple("GET /api/v1/webhooks", check=_org_webhooks)


@probe("DELETE /api/v1/webhooks/{webhook_id}", always=True, check=None)
async def _remove_webhook(world: World, who: str, path: str) -> Answer:
    hook = await world.webhook()
    answer = await world.ask(who, "DELETE", fill(path, webhook_id=hook))
    assert (hook in await world.webhook_orgs()) == (answer.status != 204)
    return answer


# --- The tests -----------------------------------------------------------------------------------------------

# Notification devices.
@probe("POST /api/v1/notifications/devices")
async def _register_device(world: World, who: str, path: str) -> Answer:
    answer = await world.ask(who, "POST", path, json=browser_subscription(
        f"http://127.0.0.1:9/push/{world.unique(who)}"))
    if answer.status == 201:  # the caller's own device, in its own organisation
        async with world.db.system_session() as session:
            row = await session.get(NotificationDevice, answer.body["id"])
        assert row is not None and row.org_id == own_org(world, who)
        if who == "key":  # a key acting as no user owns its devices itself
            assert row.user_id is None and row.api_key_id == world.ids["key"]
        elif who != "other":
            assert row.user_id == world.ids[who]
    return answer


async def _own_devices(world: World, who: str, answer: Answer) -> None:
    listed = {device["id"] for device in answer.body["devices"]}
    assert (world.ids["device_member"] in listed) == (who == "member"), listed
    owners = await world.device_owners()
    if who in USERS or who == "owner":
        assert {owners[device_id] for device_id in listed} <= {world.ids[who]}
    elif who == "key":
        assert {owners[device_id] for device_id in listed} <= {None}


simple("GET /api/v1/notifications/devices", check=_own_devices)
simple("GET /api/v1/notifications/vapid-public-key")


@probe("DELETE /api/v1/notifications/devices/{device_id}", always=True, check=None)
async def _remove_device(world: World, who: str, path: str) -> Answer:
    device = await world.device("member")
    answer = await world.ask(who, "DELETE", fill(path, device_id=device))
    assert (device in await world.device_owners()) == (answer.status != 204)
    return answer


# Usage analytics.
async def _own_usage(world: World) -> dict[str, int]:
    """Each principal of A: how many of its own calls the user report must count (from its latest reset)."""
    await world.running.services.gateway.recorder.flush()
    counts: dict[str, int] = {}
    async with world.db.system_session() as session:
        for who in IN_A:
            owner = (UsageRecord.user_id.is_(None), UsageRecord.api_key_id == world.ids["key"]) if who == "key" \
                else (UsageRecord.user_id == world.ids[who],)
            reset = None if who == "key" else await session.scalar(select(func.max(UsageReset.reset_at)).where(
                UsageReset.org_id == world.ids["org"], UsageReset.user_id == world.ids[who]))
            since = (UsageRecord.created_at >= reset,) if reset is not None else ()
            counts[who] = int(await session.scalar(select(func.count()).select_from(UsageRecord).where(
                UsageRecord.org_id == world.ids["org"], *owner, *since)) or 0)
    return counts


def _analytics(path: str, csv_export: bool) -> Call:
    async def call(world: World, who: str, path_: str) -> Answer:
        expected_counts = await _own_usage(world)
        params = {"format": "csv"} if csv_export else {"group_by": "endpoint"}
        response = await world.clients[who].get(path, params=params)
        csv_body = csv_export and response.status_code == 200
        answer = Answer(response.status_code, None if csv_body else response.json(), response.text,
                        f"{path} {json.dumps(params)}")
        answer.values["own"] = expected_counts.get(who)
        answer.values["content_type"] = response.headers.get("content-type")
        return answer

    return call


async def _own_usage_only(world: World, who: str, answer: Answer) -> None:
    if who != "other":
        assert answer.body["totals"]["requests"] == answer.values["own"], (answer.body["totals"], answer.values)
    assert who not in ("member", "div_member") or answer.body["totals"]["requests"] > 0  # they asked in _build


async def _system_scope(world: World, who: str, answer: Answer) -> None:
    body = answer.body
    if who == "owner":
        assert body["scope"] == "platform" and body["org_id"] is None, body
        assert {line["org_id"] for line in body["top_orgs"]} >= {world.ids["org"]}
    else:
        assert body["scope"] == "org" and body["org_id"] == own_org(world, who), body
        assert {line["org_id"] for line in body["top_orgs"]} <= {own_org(world, who)}
        assert all(line["org_id"] == own_org(world, who) for line in body["top_users"])


async def _is_csv(world: World, who: str, answer: Answer) -> None:
    assert answer.values["content_type"] == "text/csv; charset=utf-8", answer.values
    assert answer.text.startswith("key,org_id,user_id,api_key_id,requests"), answer.text[:200]
    if who == "other":
        assert world.ids["org"] not in answer.text


probe("GET /api/v1/analytics/user", check=_own_usage_only)(_analytics("/api/v1/analytics/user", False))
probe("GET /api/v1/analytics/user #csv", check=_is_csv)(_analytics("/api/v1/analytics/user", True))
probe("GET /api/v1/analytics/system", check=_system_scope)(_analytics("/api/v1/analytics/system", False))
probe("GET /api/v1/analytics/system #csv", check=_is_csv)(_analytics("/api/v1/analytics/system", True))


async def _resets_of(world: World, user_id: str) -> int:
    async with world.db.system_session() as session:
        return int(await session.scalar(select(func.count()).select_from(UsageReset).where(
            UsageReset.user_id == user_id)) or 0)


def _reset(target: str) -> Call:
    async def call(world: World, who: str, path: str) -> Answer:
        before = await _resets_of(world, world.ids[target])
        answer = await world.ask(who, "POST", fill(path, user_id=world.ids[target]))
        assert await _resets_of(world, world.ids[target]) == before + (1 if answer.status == 200 else 0)
        return answer

    return call


probe("POST /api/v1/analytics/user/{user_id}/reset")(_reset("div_member"))
probe("POST /api/v1/analytics/user/{user_id}/reset #unscoped")(_reset("member"))


def test_every_route_has_a_matrix_row(tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    lines = {parse_line(line)[:2] for line in MATRIX}
    missing = sorted(routes - lines)
    assert not missing, f"routes without a line in the authorization matrix (tests/api/test_authz_matrix.py): {missing}"
    stale = sorted(lines - routes)
    assert not stale, f"matrix lines for routes that no longer exist: {stale}"
    assert set(PROBES) == set(MATRIX), sorted(set(MATRIX) ^ set(PROBES))


@pytest.mark.parametrize("line", list(MATRIX))
async def test_authorization_matrix(world: World, line: str) -> None:
    """Every principal asks; the statuses must be the line's, and each answer passes the line's check."""
    wanted, found = expected(line), {}
    problems: list[str] = []
    path = parse_line(line)[1]
    for who in ORDER:
        answer = await PROBES[line].call(world, who, path)
        found[who] = answer.status
        if answer.status != wanted[who]:
            problems.append(f"{who}: {answer.status} (expected {wanted[who]}): {answer.text[:300]}")
            continue
        if who == "other":
            leaked = sorted(secret for secret in world.secrets if secret in answer.text and secret not in answer.sent)
            if leaked:
                problems.append(f"other: the answer holds A's {leaked}: {answer.text[:300]}")
        check = PROBES[line].check
        if check is not None and (200 <= answer.status < 300 or PROBES[line].always):
            try:
                await check(world, who, answer)
            except AssertionError as error:
                problems.append(f"{who}: {answer.status} but {error or 'its check failed'}")
    got = "  ".join(f"{who}={found[who]}" for who in COLUMNS)
    assert not problems, f"{line} ({world.backend}):\n  " + "\n  ".join(problems) + f"\n  got: {got}"
