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

/// Two servers on one Redis (and on one cluster): the copy one keeps of
/// the sessions it wrote never outvotes what the other wrote since.
mod two_instances {
    use session_conformance::sessions::a_copy_kept_by_one_instance_never_outvotes_another as check;

    use crate::{cluster_store_with_prefix, single_store_with_prefix, unique_prefix};

    #[tokio::test]
    async fn single_node() {
        let prefix = unique_prefix();
        let here = single_store_with_prefix(&prefix).await;
        let there = single_store_with_prefix(&prefix).await;
        check(here, there).await;
    }

    #[tokio::test]
    async fn cluster() {
        let prefix = unique_prefix();
        let here = cluster_store_with_prefix(&prefix).await;
        let there = cluster_store_with_prefix(&prefix).await;
        check(here, there).await;
    }
}
