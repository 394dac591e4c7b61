//! The shared conformance suite, on one node and on the cluster.

mod single_node {
    mod sessions {
        session_conformance::session_store_tests!(crate::single_store());
    }
    mod users {
        session_conformance::user_store_tests!(crate::single_store());
    }
    mod accounts {
        session_conformance::session_and_user_store_tests!(crate::single_store());
    }
}

/// The session checks again with records sealed at rest.
mod single_node_sealed {
    mod sessions {
        session_conformance::session_store_tests!(crate::single_sealed_store());
    }
    mod accounts {
        session_conformance::session_and_user_store_tests!(crate::single_sealed_store());
    }
}

mod cluster {
    mod sessions {
        session_conformance::session_store_tests!(crate::cluster_store());
    }
    mod users {
        session_conformance::user_store_tests!(crate::cluster_store());
    }
    mod accounts {
        session_conformance::session_and_user_store_tests!(crate::cluster_store());
    }
}
