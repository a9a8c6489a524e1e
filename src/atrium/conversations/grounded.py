"""What the chat and query use cases share: a grounded answer, produced by a detached run and stored
whatever happens, under the guard pipeline applied once (admit, then the question's input and the
sources' context stages in the answerer, then the answer's output stage)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from atrium.accounts.principal import Principal
from atrium.conversations.generation import Outcome, answer_and_store
from atrium.conversations.runs import AnswerRun, RunSupervisor
from atrium.gateway.ports import CallContext, ChatMessage, ChatModel
from atrium.gateway.settings import ChatSettings
from atrium.guard.pipeline import GuardPipeline
from atrium.knowledge.answering import GroundedAnswerer, GroundedPrompt
from atrium.knowledge.directory import CollectionDirectory
from atrium.store.engine import Database


class GroundedUseCase:
    """The base of ``ChatService`` and ``QueryService``: their collaborators and ``_produce``."""

    def __init__(self, db: Database, answerer: GroundedAnswerer, model: ChatModel, runs: RunSupervisor,
                 settings: ChatSettings, directory: CollectionDirectory, guard: GuardPipeline | None = None) -> None:
        self.db = db
        self.directory = directory
        self.answerer = answerer
        self.model = model
        self.runs = runs
        self.settings = settings
        self.guard = guard  # applied once per answer: admit, then input and context, then output

    async def _produce(self, principal: Principal, run: AnswerRun, question: str,
                       collections: Sequence[str] | None, *, endpoint: str,
                       store: Callable[[Outcome], Awaitable[None]],
                       history: Callable[[], Awaitable[Sequence[ChatMessage]]] | None = None,
                       model: str = "") -> Outcome:
        """Answer ``question`` (after the conversation's ``history``, read when the run starts) into
        ``run`` and ``store`` the outcome; the model calls are metered under ``endpoint``. ``model``: the
        catalogue model or route to answer with ("" = the question-answering route)."""
        admitted = await self.guard.admit(principal.org_id) if self.guard is not None else None

        async def prompt() -> GroundedPrompt:
            past = await history() if history is not None else ()
            return await self.answerer.prepare(principal.org_id, question, past, collections, admitted)

        return await answer_and_store(prompt_for=prompt, model=self.model, run=run, settings=self.settings,
                                      context=grounded_context(principal, endpoint), store=store,
                                      sanitizer=admitted.output() if admitted is not None else None,
                                      model_name=model)


def grounded_context(principal: Principal, endpoint: str) -> CallContext:
    return CallContext(org_id=principal.org_id, user_id=principal.user_id, api_key_id=principal.api_key_id,
                       endpoint=endpoint, task="qa")
