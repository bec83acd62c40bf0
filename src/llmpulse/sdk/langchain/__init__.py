"""LangChain integration: `LlmpulseCallbackHandler` (needs langchain-core: `pip install llmpulse[langchain]`).

```python
from llmpulse.sdk.langchain import LlmpulseCallbackHandler

handler = LlmpulseCallbackHandler(collector, budget_limit=10.0, tenant_id="acme", user_id="u1")
llm = ChatOpenAI(model="gpt-4o-mini", callbacks=[handler])
```

Errors: `BudgetExceeded` (from `llmpulse.sdk._budget`) stops a run when a `"raise"` budget would be
passed; nothing else the handler does can raise into the application. Importing this module without
langchain-core raises `ImportError` naming the extra to install.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401 (checked here for a clear error message)
except ImportError as exc:  # pragma: no cover - exercised only without the optional extra
    raise ImportError(
        "llmpulse.sdk.langchain needs langchain-core: pip install 'llmpulse[langchain]'"
    ) from exc

from llmpulse.sdk._budget import Budget, BudgetExceeded, Budgets
from llmpulse.sdk.langchain._handler import LlmpulseCallbackHandler, Recorder

__all__ = ["Budget", "BudgetExceeded", "Budgets", "LlmpulseCallbackHandler", "Recorder"]
