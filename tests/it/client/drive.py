"""Drives a running mailgate through a client generated from its own API
description (openapi-python-client), knowing nothing else about it.

Usage: drive.py CLIENT_PACKAGE_DIR BASE_URL API_TOKEN ADMIN_TOKEN
Prints one JSON object of what it saw; exits non-zero on any surprise.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
base, token, admin_token = sys.argv[2], sys.argv[3], sys.argv[4]

from gen import AuthenticatedClient  # noqa: E402
from gen.api.admin import get_api_v1_admin_rules  # noqa: E402
from gen.api.dashboard import (  # noqa: E402
    get_api_v1_chats_id,
    get_api_v1_inbound_log,
    get_api_v1_plans,
    post_api_v1_chats,
    post_api_v1_chats_id_messages,
    post_api_v1_organizations,
    post_api_v1_sites,
    post_api_v1_users,
)
from gen.models import (  # noqa: E402
    NewChat,
    NewOrganization,
    NewSite,
    NewUser,
    Organization,
    Plan,
    PostMessage,
    Site,
    ThreadView,
    User,
)

client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)
admin = AuthenticatedClient(base_url=base, token=admin_token, raise_on_unexpected_status=True)


def expect(value, kind):
    if not isinstance(value, kind):
        raise SystemExit(f"expected a {kind.__name__}, got {value!r}")
    return value


plans = get_api_v1_plans.sync(client=client)
assert all(isinstance(p, Plan) for p in plans) and any(p.id == "sandbox" for p in plans), plans
org = expect(post_api_v1_organizations.sync(client=client, body=NewOrganization(name="ACME")), Organization)
site = expect(post_api_v1_sites.sync(client=client, body=NewSite(name="acme.example", plan="sandbox", organization_id=org.id)), Site)
owner = expect(
    post_api_v1_users.sync(
        client=client, body=NewUser(email="olivia@acme.example", name="Olivia", role="owner", organization_id=org.id)
    ),
    User,
)
agent = expect(post_api_v1_users.sync(client=client, body=NewUser(email="alex@agents.example", name="Alex", role="agent")), User)
chat = expect(post_api_v1_chats.sync(client=client, body=NewChat(site_id=site.id, customer_id=owner.id, message="Hello")), ThreadView)
post_api_v1_chats_id_messages.sync(id=str(chat.id), client=client, body=PostMessage(author_id=agent.id, text="Hi there"))
seen = expect(get_api_v1_chats_id.sync(id=str(chat.id), client=client), ThreadView)
log = get_api_v1_inbound_log.sync(client=client)
rules = get_api_v1_admin_rules.sync(client=admin)
print(
    json.dumps(
        {
            "plans": len(plans),
            "chat": seen.id,
            "texts": [m.text for m in seen.messages],
            "authors": [m.author.name for m in seen.messages],
            "log": len(log),
            "rules": rules.to_dict().get("source", rules.to_dict()),
        }
    )
)
