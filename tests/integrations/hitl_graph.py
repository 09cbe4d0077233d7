"""A LangGraph graph with a human-in-the-loop interrupt, run as its own process.

``python hitl_graph.py URL PREFIX THREAD sync|async start|resume``: ``start`` runs
until the interrupt, prints ``INTERRUPTED <question>`` and waits to be killed;
``resume`` resumes the thread with the answer ``yes`` and prints the final state
as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from chatlog.integrations.langgraph import ChatlogSaver


class State(TypedDict, total=False):
    draft: str
    answer: str
    published: bool


def write(state: State) -> State:
    return {"draft": "a post about event logs"}


def ask(state: State) -> State:
    answer = interrupt(f"publish {state['draft']!r}?")
    return {"answer": answer}


def publish(state: State) -> State:
    return {"published": state["answer"] == "yes"}


def build() -> StateGraph[State]:
    g = StateGraph(State)
    g.add_node("write", write)
    g.add_node("ask", ask)
    g.add_node("publish", publish)
    g.add_edge(START, "write")
    g.add_edge("write", "ask")
    g.add_edge("ask", "publish")
    g.add_edge("publish", END)
    return g


def report(step: str, result: dict) -> None:
    if step == "start":
        question = result["__interrupt__"][0].value
        print("INTERRUPTED", question, flush=True)
        time.sleep(600)  # killed with -9 here
    else:
        print(json.dumps({k: v for k, v in result.items() if not k.startswith("__")}),
              flush=True)


def main() -> None:
    url, prefix, thread, mode, step = sys.argv[1:6]
    config = {"configurable": {"thread_id": thread}}
    payload = {} if step == "start" else Command(resume="yes")
    if mode == "sync":
        with ChatlogSaver.from_conn_string_sync(url, project="Agents", key_prefix=prefix) as s:
            report(step, build().compile(checkpointer=s).invoke(payload, config))
    else:
        async def run() -> None:
            async with ChatlogSaver.from_conn_string(url, project="Agents",
                                                     key_prefix=prefix) as s:
                result = await build().compile(checkpointer=s).ainvoke(payload, config)
                await asyncio.to_thread(report, step, result)

        asyncio.run(run())


if __name__ == "__main__":
    main()
